//! wf-uaa
