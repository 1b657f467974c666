//! E-graph partitioner.
