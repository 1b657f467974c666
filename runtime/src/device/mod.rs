//! Devices and backends that execute plans.
pub mod shm;
