//! `drover check`: which copy method each target of a sync gets (`round::copy_method`), one
//! line per target when every table gets the same, else one line per table.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::round::copy_method::{rebuild_blocker, CopyMethod};
use crate::topology::SyncPlan;

/// Prints `  copy method on TARGET: ...` for each reachable target of `sync`. Tables that do
/// not exist are skipped: the table check reports them.
pub async fn print_copy_methods(sync: &SyncPlan, clients: &HashMap<String, Client>) {
    for target in &sync.targets {
        let Some(client) = clients.get(target) else {
            continue;
        };
        let mut methods: Vec<(String, String)> = Vec::new();
        for table in &sync.tables {
            if let Ok(blocker) = rebuild_blocker(client, target, &table.quoted()).await {
                let method = CopyMethod::describe_rights(blocker.as_deref());
                methods.push((table.to_string(), method));
            }
        }
        let Some((_, first)) = methods.first() else {
            continue;
        };
        if methods.iter().all(|(_, m)| m == first) {
            println!("  copy method on {target}: {first}");
        } else {
            for (table, method) in &methods {
                println!("  copy method on {target} for {table}: {method}");
            }
        }
    }
}
