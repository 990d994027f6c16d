//! `wf`: the developer CLI.
