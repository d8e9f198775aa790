//! The two ends of a round: a source it reads from and a database it applies to.

use crate::pg::facts::ReplicaRole;
use crate::pg::Pool;

#[derive(Clone)]
pub struct SourceSide {
    pub name: String,
    pub pool: Pool,
}

#[derive(Clone)]
pub struct TargetSide {
    pub name: String,
    pub pool: Pool,
    pub replica_role: ReplicaRole,
}
