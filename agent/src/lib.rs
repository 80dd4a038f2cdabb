//! podwarn agent library.
