//! wf-controller
