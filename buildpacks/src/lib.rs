//! wf-buildpacks
