//! archsmith
