//! Kubernetes API simulator for podwarn tests.
