//! Fault injection for crash tests: `STREAMHOST_FAULT=<step>:<n>` aborts the process (no
//! cleanup, like `kill -9`) right after the n-th time (1-based) the pipeline completes
//! `<step>`. Steps: `after-changelog`, `after-state`, `after-commit`, `after-board`, and
//! under exactly-once `mid-transaction` (a batch sent into the open transaction). Under
//! exactly-once, `after-changelog` is after the transaction's commit, before state.
//! `abort-transaction:<n>` does not abort the process: the n-th transaction commit fails as
//! an abortable error would, to exercise the abort-and-rewind path. `lost-commit-answer:<n>`
//! neither: the n-th transaction that changes state commits, but the host takes it as in doubt (as when
//! its answer was lost and the producer then fenced), to exercise reading state back from
//! Kafka. `fail-consumer:<n>`: the n-th poll with records fails as a consumer fenced for
//! good would (its records dropped). `stall-consumer:<n>`
//! neither: after the n-th batch the input delivers nothing more, as a stuck consumer would,
//! to exercise the stall watchdog.
//! Read once at start-up; unset, it costs one branch per step.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AfterChangelog,
    AfterState,
    AfterCommit,
    AfterBoard,
    MidTransaction,
    AbortTransaction,
    LostCommitAnswer,
    FailConsumer,
    StallConsumer,
}

impl Step {
    fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "after-changelog" => Step::AfterChangelog,
            "after-state" => Step::AfterState,
            "after-commit" => Step::AfterCommit,
            "after-board" => Step::AfterBoard,
            "mid-transaction" => Step::MidTransaction,
            "abort-transaction" => Step::AbortTransaction,
            "lost-commit-answer" => Step::LostCommitAnswer,
            "fail-consumer" => Step::FailConsumer,
            "stall-consumer" => Step::StallConsumer,
            _ => return None,
        })
    }
}

struct Plan {
    step: Step,
    at: u64,
    seen: std::sync::atomic::AtomicU64,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("STREAMHOST_FAULT").ok()?;
        let parsed = spec.split_once(':').and_then(|(s, n)| Some((Step::parse(s)?, n.parse::<u64>().ok()?)));
        match parsed {
            Some((step, at)) if at > 0 => {
                tracing::warn!(fault = %spec, "fault injection armed: the process will abort");
                Some(Plan { step, at, seen: 0.into() })
            }
            _ => {
                tracing::error!(fault = %spec, "STREAMHOST_FAULT ignored: expected <step>:<n>, e.g. after-state:3");
                None
            }
        }
    })
    .as_ref()
}

/// Called by the pipeline after each step; aborts when the armed fault is due.
pub fn point(step: Step) {
    if due(step) {
        eprintln!("fault injection: aborting {step:?}");
        std::process::abort();
    }
}

/// True when the armed fault is `step` and this is its n-th time.
pub fn due(step: Step) -> bool {
    plan().is_some_and(|plan| {
        plan.step == step && plan.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == plan.at
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names() {
        assert_eq!(Step::parse("after-state"), Some(Step::AfterState));
        assert_eq!(Step::parse("after-board"), Some(Step::AfterBoard));
        assert_eq!(Step::parse("before-anything"), None);
    }
}
