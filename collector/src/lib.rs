//! podwarn collector.
