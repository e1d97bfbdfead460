//! Prints what each function reads: its environment variables and the keys its scheduled
//! `Input` accepts. `scripts/infra-drift.py` compares the SAM template against this, so the
//! template cannot drift from the code.

use std::collections::BTreeMap;

use serde_json::json;
use shared::config::VARIABLES;
use shared::schedule::{REPORT_INPUT_KEYS, SCAN_INPUT_KEYS};

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
        out.insert(function, json!({"env": env, "input_keys": input_keys}));
    }
    println!("{}", serde_json::to_string_pretty(&out).expect("JSON of strings"));
}
