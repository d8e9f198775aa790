//! Running child processes with a deadline, so a hang fails the test instead
//! of stalling the whole suite.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

type Buffer = Arc<Mutex<Vec<u8>>>;

/// Runs `cmd` to completion, feeding it `input` on stdin (or /dev/null), and
/// returns its captured output. Panics, showing the output so far, if it has
/// not exited after `timeout` (the child is killed first).
pub fn run_with_timeout(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));

    // Write stdin from a thread: a child that fills its stdout pipe before
    // reading all its input would otherwise deadlock with us.
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let text = text.to_owned();
        thread::spawn(move || {
            // A child that exits early closes the pipe; its exit status says why.
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let (stdout, out_reader) = collect(child.stdout.take());
    let (stderr, err_reader) = collect(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                // Do not join the readers: a grandchild may still hold the pipes.
                panic!(
                    "timed out after {timeout:?}: {desc}\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
                    lossy(&stdout),
                    lossy(&stderr)
                );
            }
            Ok(None) => {
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot wait for {desc}: {e}"),
        }
    };
    let _ = out_reader.join();
    let _ = err_reader.join();
    Output {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
    }
}

/// Drains `pipe` into a shared buffer from a thread, so partial output can
/// still be shown when the child times out.
fn collect<R: Read + Send + 'static>(pipe: Option<R>) -> (Buffer, JoinHandle<()>) {
    let buffer = Buffer::default();
    let sink = Arc::clone(&buffer);
    let handle = thread::spawn(move || {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => sink
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    (buffer, handle)
}

fn take(buffer: &Buffer) -> Vec<u8> {
    std::mem::take(&mut *buffer.lock().unwrap_or_else(|e| e.into_inner()))
}

fn lossy(buffer: &Buffer) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}
