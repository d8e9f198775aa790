//! A sync's lifecycle as one value: what the SyncActor is doing with it now. Whether the sync
//! is good or bad is its lanes' business (`lanes`), and a pause is an operator's setting shown
//! in status; neither is a phase.

/// Where a sync is in its life on this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Trying to take the lease for the first time.
    Starting,
    /// Another daemon holds the lease: not a fault.
    Standby,
    /// Reading server facts and table plans (with the lease).
    Preparing,
    /// Copying tables into receivers: no rounds meanwhile.
    Copying,
    /// Rounds run on kicks.
    Running,
    /// Shutting down: no new rounds, waiting for the running ones.
    Stopping,
}

impl Phase {
    /// A prepare or copy ended (well or not): rounds run again once there are plans. Any other
    /// phase stays: the lease was lost, or the daemon stops, meanwhile.
    pub fn step_done(self, prepared: bool) -> Phase {
        match self {
            Phase::Preparing | Phase::Copying if prepared => Phase::Running,
            Phase::Preparing | Phase::Copying => Phase::Starting,
            other => other,
        }
    }

    /// The lease is held by another daemon, or was lost.
    pub fn standby(self) -> Phase {
        match self {
            Phase::Stopping => Phase::Stopping,
            _ => Phase::Standby,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_return_to_running_only_from_their_own_phase() {
        assert_eq!(Phase::Preparing.step_done(true), Phase::Running);
        assert_eq!(Phase::Preparing.step_done(false), Phase::Starting);
        assert_eq!(Phase::Copying.step_done(true), Phase::Running);
        // The lease was lost while copying: the copy's end does not resume rounds.
        assert_eq!(Phase::Standby.step_done(true), Phase::Standby);
        assert_eq!(Phase::Stopping.step_done(true), Phase::Stopping);
    }

    #[test]
    fn stopping_is_final() {
        assert_eq!(Phase::Stopping.standby(), Phase::Stopping);
        assert_eq!(Phase::Running.standby(), Phase::Standby);
    }
}
