//! Launch-configuration math (grid and block sizes) for the kernels.
use cudarc::driver::LaunchConfig;

/// Threads per block of the elementwise (grid-stride) kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Upper bound on the grid of grid-stride kernels (they loop over the rest).
pub const MAX_GRID: u32 = 65_535;

/// Grid-stride launch over `n` elements: 256 threads per block, enough blocks to cover
/// `n` up to [`MAX_GRID`], at least one block.
pub fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n
        .div_ceil(ELEMENTWISE_BLOCK as usize)
        .clamp(1, MAX_GRID as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (ELEMENTWISE_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row (grid-stride over rows), with a power-of-two block between 32 and
/// 1024 threads sized to the row length (the block reductions need a power of two).
pub fn rows(rows: usize, len: usize) -> LaunchConfig {
    let threads = len.clamp(32, 1024).next_power_of_two() as u32;
    let blocks = rows.clamp(1, MAX_GRID as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elementwise_grids() {
        assert_eq!(elementwise(0).grid_dim.0, 1);
        assert_eq!(elementwise(1).grid_dim.0, 1);
        assert_eq!(elementwise(256).grid_dim.0, 1);
        assert_eq!(elementwise(257).grid_dim.0, 2);
        assert_eq!(elementwise(1 << 30).grid_dim.0, MAX_GRID);
        assert_eq!(elementwise(1000).block_dim, (256, 1, 1));
    }

    #[test]
    fn row_blocks_are_powers_of_two() {
        assert_eq!(rows(10, 1).block_dim.0, 32);
        assert_eq!(rows(10, 384).block_dim.0, 512);
        assert_eq!(rows(10, 512).block_dim.0, 512);
        assert_eq!(rows(10, 5000).block_dim.0, 1024);
        assert_eq!(rows(0, 8).grid_dim.0, 1);
        assert_eq!(rows(1 << 20, 8).grid_dim.0, MAX_GRID);
    }
}
