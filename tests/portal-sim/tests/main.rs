//! portal-sim's tests, linked into one binary. Every test starts its own simulator on
//! 127.0.0.1:0 and talks raw HTTP to it.

mod control;
mod esri_client;
mod faults;
mod holds;
mod listing;
mod quirks;
mod robustness;
mod scale;
mod state;
mod support;
mod writes;
