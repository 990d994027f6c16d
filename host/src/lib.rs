//! wf-host
