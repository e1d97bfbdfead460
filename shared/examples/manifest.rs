//! Prints what each function reads: its environment variables, the keys its scheduled
//! `Input` accepts, what each constrained variable accepts (probe values with the code's own
//! answer), and the metrics it publishes. `scripts/infra-drift.py` compares the SAM template
//! against this, so the template cannot drift from the code.

// A tool run by hand or by the tests: a failure may end it with a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use shared::config::{LIMITS, VARIABLES, accepts};
use shared::scan::summary::METRIC_NAMES;
use shared::schedule::{REPORT_INPUT_KEYS, SCAN_INPUT_KEYS};
use shared::telemetry::{NAMESPACE, STACK_DIMENSION};

fn main() {
    let mut out = BTreeMap::new();
    for function in ["scan-credits", "allocate", "allocation-jobs", "monthly-report"] {
        let env: Vec<&str> = VARIABLES
            .iter()
            .filter(|(_, fs)| fs.contains(&function))
            .map(|(n, _)| *n)
            .collect();
        let input_keys: &[&str] = match function {
            "scan-credits" => SCAN_INPUT_KEYS,
            "monthly-report" => REPORT_INPUT_KEYS,
            _ => &[],
        };
        // Each probe with the code's answer; `bound` marks the values the template must answer
        // the same way (see `shared::config::Probe`).
        let limits: BTreeMap<&str, Vec<Value>> = LIMITS
            .iter()
            .filter(|(name, _)| env.contains(name))
            .map(|(name, spec)| {
                let probes = spec
                    .probes()
                    .into_iter()
                    .map(|p| json!({"value": p.value, "accepted": accepts(name, &p.value), "bound": p.bound.is_some()}))
                    .collect();
                (*name, probes)
            })
            .collect();
        let mut entry = json!({"env": env, "input_keys": input_keys, "limits": limits});
        if function == "scan-credits" {
            // The stack dimension's value comes from STACK_NAME.
            entry["metrics"] = json!({
                "namespace": NAMESPACE,
                "names": METRIC_NAMES,
                "dimensions": {STACK_DIMENSION: "STACK_NAME"},
            });
        }
        out.insert(function, entry);
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("JSON of strings"));
}
