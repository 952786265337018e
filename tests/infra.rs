//! Deploy artefacts under infra/ are valid (filled in with the manifests).
