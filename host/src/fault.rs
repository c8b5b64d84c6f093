//! Fault injection for crash tests: `STREAMHOST_FAULT=<step>:<n>` aborts the process (no
//! cleanup, like `kill -9`) right after the n-th time (1-based) the pipeline completes
//! `<step>`. Steps: `after-changelog`, `after-state`, `after-commit`, `after-board`.
//! Read once at start-up; unset, it costs one branch per step.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    AfterChangelog,
    AfterState,
    AfterCommit,
    AfterBoard,
}

impl Step {
    fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "after-changelog" => Step::AfterChangelog,
            "after-state" => Step::AfterState,
            "after-commit" => Step::AfterCommit,
            "after-board" => Step::AfterBoard,
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
    if let Some(plan) = plan()
        && plan.step == step
        && plan.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == plan.at
    {
        eprintln!("fault injection: aborting {step:?} #{}", plan.at);
        std::process::abort();
    }
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
