//! `POST /reload`: the daemon re-reads its config file (as on SIGHUP). 200 with what changed;
//! 422 with the problem list when the new config is rejected (the old one keeps running).

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::server::{reply, Routes};
use crate::actors::reload::Reload;

pub(super) async fn reload(routes: &Routes) -> Response<Full<Bytes>> {
    let Some(to) = &routes.reload else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "reload not available\n",
        );
    };
    match to.send(Reload).await {
        Ok(Ok(summary)) => reply(StatusCode::OK, "text/plain", format!("{summary}\n")),
        Ok(Err(problems)) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "text/plain",
            format!("{problems}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("reload is not running: {e}\n"),
        ),
    }
}
