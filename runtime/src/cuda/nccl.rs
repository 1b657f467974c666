//! NCCL through its C API, resolved from the library [`super::libs`] found (`libnccl.so.2`
//! included, which cudarc's loader never opens; see the notes there).
//!
//! Only what the backend uses is bound, with plain C types (`int` results and enums), so
//! that no result code a newer NCCL returns can become an invalid Rust enum value. Nothing
//! here panics: every call returns a [`CudaError`].
use super::libs::{self, CudaLib};
use super::CudaError;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// `ncclComm_t`.
type RawComm = *mut c_void;
/// `cudaStream_t` (the same handle as the driver's `CUstream`).
type RawStream = *mut c_void;

/// `ncclUniqueId`: 128 opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UniqueId {
    /// The bytes (rank 0 creates them; the rendezvous hands them to the others).
    pub internal: [c_char; 128],
}

/// `ncclSuccess`.
const NCCL_SUCCESS: c_int = 0;
/// `ncclInProgress` (non-blocking communicators; also an async-error state).
const NCCL_IN_PROGRESS: c_int = 7;
/// `ncclSum`.
const NCCL_SUM: c_int = 0;

/// NCCL element types (`ncclDataType_t`) of the device storage classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcclType {
    /// `ncclUint8` (booleans).
    U8 = 1,
    /// `ncclInt64`.
    I64 = 4,
    /// `ncclFloat32`.
    F32 = 7,
}

type FnGetId = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type FnInit = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int;
type FnComm = unsafe extern "C" fn(RawComm) -> c_int;
type FnAsync = unsafe extern "C" fn(RawComm, *mut c_int) -> c_int;
type FnAllReduce = unsafe extern "C" fn(u64, u64, usize, c_int, c_int, RawComm, RawStream) -> c_int;
type FnBcast = unsafe extern "C" fn(u64, u64, usize, c_int, c_int, RawComm, RawStream) -> c_int;
type FnGather = unsafe extern "C" fn(u64, u64, usize, c_int, RawComm, RawStream) -> c_int;
type FnP2p = unsafe extern "C" fn(u64, usize, c_int, c_int, RawComm, RawStream) -> c_int;
type FnGroup = unsafe extern "C" fn() -> c_int;
type FnErrStr = unsafe extern "C" fn(c_int) -> *const c_char;
/// `ncclCommSplit(comm, color, key, &newcomm, config)` (NCCL 2.18 and later).
type FnSplit = unsafe extern "C" fn(RawComm, c_int, c_int, *mut RawComm, *mut c_void) -> c_int;

/// The NCCL entry points used, resolved once per process.
pub struct NcclApi {
    get_unique_id: FnGetId,
    comm_init_rank: FnInit,
    comm_destroy: FnComm,
    comm_abort: FnComm,
    comm_get_async_error: FnAsync,
    all_reduce: FnAllReduce,
    broadcast: FnBcast,
    all_gather: FnGather,
    reduce_scatter: FnAllReduce,
    send: FnP2p,
    recv: FnP2p,
    group_start: FnGroup,
    group_end: FnGroup,
    get_error_string: FnErrStr,
    /// Absent from NCCL before 2.18: then subgroup collectives fail with a clear error.
    comm_split: Option<FnSplit>,
}

/// Resolves one symbol as a function pointer of type `F`.
fn sym<F: Copy>(lib: &'static libloading::Library, name: &str) -> Result<F, String> {
    let c = format!("{name}\0");
    // SAFETY: every `F` used here is the C signature of the NCCL function `name` (NCCL 2.x
    // API, stable since 2.0 for these calls); the library stays open for the process
    // lifetime (`libs::open` never closes it), so the pointer stays valid.
    unsafe { lib.get::<F>(c.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| format!("symbol {name}: {e}"))
}

impl NcclApi {
    fn load() -> Result<NcclApi, String> {
        let opened = libs::open(CudaLib::Nccl).map_err(|e| e.to_string())?;
        let l = &opened.lib;
        Ok(NcclApi {
            get_unique_id: sym(l, "ncclGetUniqueId")?,
            comm_init_rank: sym(l, "ncclCommInitRank")?,
            comm_destroy: sym(l, "ncclCommDestroy")?,
            comm_abort: sym(l, "ncclCommAbort")?,
            comm_get_async_error: sym(l, "ncclCommGetAsyncError")?,
            all_reduce: sym(l, "ncclAllReduce")?,
            broadcast: sym(l, "ncclBroadcast")?,
            all_gather: sym(l, "ncclAllGather")?,
            reduce_scatter: sym(l, "ncclReduceScatter")?,
            send: sym(l, "ncclSend")?,
            recv: sym(l, "ncclRecv")?,
            group_start: sym(l, "ncclGroupStart")?,
            group_end: sym(l, "ncclGroupEnd")?,
            get_error_string: sym(l, "ncclGetErrorString")?,
            comm_split: sym(l, "ncclCommSplit").ok(),
        })
    }

    /// The process-wide API (finding and opening NCCL on first use).
    pub fn get() -> Result<&'static NcclApi, CudaError> {
        static API: OnceLock<Result<NcclApi, String>> = OnceLock::new();
        API.get_or_init(NcclApi::load)
            .as_ref()
            .map_err(|m| CudaError::MissingLibrary {
                lib: "nccl".into(),
                msg: m.clone(),
            })
    }

    /// `Ok` for `ncclSuccess`, else an error naming `what` and NCCL's description.
    fn check(&self, what: &str, r: c_int) -> Result<(), CudaError> {
        if r == NCCL_SUCCESS {
            return Ok(());
        }
        Err(CudaError::Nccl(format!("{what}: {}", self.describe(r))))
    }

    /// NCCL's description of result code `r`.
    pub fn describe(&self, r: c_int) -> String {
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let p = unsafe { (self.get_error_string)(r) };
        if p.is_null() {
            return format!("NCCL result {r}");
        }
        // SAFETY: non-null, NUL-terminated, static (see above).
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
        format!("{s} (code {r})")
    }

    /// A fresh unique id (rank 0).
    pub fn unique_id(&self) -> Result<UniqueId, CudaError> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: `id` is a valid, writable ncclUniqueId.
        let r = unsafe { (self.get_unique_id)(&mut id) };
        self.check("ncclGetUniqueId", r)?;
        Ok(id)
    }
}

/// A communicator. Dropping it destroys it, unless it was aborted.
pub struct Comm {
    raw: RawComm,
    api: &'static NcclApi,
    rank: usize,
    world: usize,
    aborted: bool,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; `Comm` hands out no shared references to the handle (every call takes
// `&mut self` or happens in its owner's thread), and destroy/abort are valid from any thread.
unsafe impl Send for Comm {}

impl Comm {
    /// Joins the communicator of `world` ranks as `rank` (blocks until all ranks joined; the
    /// caller bounds that with a [`super::watchdog::Deadman`]). The device must be current
    /// on this thread.
    pub fn init(id: &UniqueId, rank: usize, world: usize) -> Result<Comm, CudaError> {
        let api = NcclApi::get()?;
        let (r32, w32) = (
            c_int::try_from(rank).map_err(|_| CudaError::Nccl(format!("rank {rank}")))?,
            c_int::try_from(world).map_err(|_| CudaError::Nccl(format!("world {world}")))?,
        );
        let mut raw: RawComm = std::ptr::null_mut();
        // SAFETY: `raw` is writable; the id is passed by value as the C API takes it.
        let r = unsafe { (api.comm_init_rank)(&mut raw, w32, *id, r32) };
        api.check(&format!("ncclCommInitRank (rank {rank} of {world})"), r)?;
        Ok(Comm {
            raw,
            api,
            rank,
            world,
            aborted: false,
        })
    }

    /// Splits this communicator (`ncclCommSplit`, collective over all its ranks: each calls
    /// it once, in the same order): the ranks that pass the same `color` form a new
    /// communicator, ordered by `key`, of `size` ranks (this one at `key`). The caller bounds
    /// the wait as for [`Comm::init`].
    pub fn split(&self, color: usize, key: usize, size: usize) -> Result<Comm, CudaError> {
        let raw = self.live("ncclCommSplit")?;
        let split = self.api.comm_split.ok_or_else(|| {
            CudaError::Unsupported(
                "a collective over a subgroup of ranks (a data × tensor mesh) needs ncclCommSplit, NCCL 2.18 or later".into(),
            )
        })?;
        let int = |v: usize, what: &str| {
            c_int::try_from(v).map_err(|_| CudaError::Nccl(format!("ncclCommSplit {what} {v}")))
        };
        let (c, k) = (int(color, "color")?, int(key, "key")?);
        let mut sub: RawComm = std::ptr::null_mut();
        // SAFETY: `raw` is live; `sub` is writable; a null config asks for the parent's.
        let r = unsafe { split(raw, c, k, &mut sub, std::ptr::null_mut()) };
        self.api.check(
            &format!(
                "ncclCommSplit (rank {} of {}, color {color})",
                self.rank, self.world
            ),
            r,
        )?;
        Ok(Comm {
            raw: sub,
            api: self.api,
            rank: key,
            world: size,
            aborted: false,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The communicator's asynchronous error, if any (`ncclCommGetAsyncError`): a remote
    /// rank's failure or a network error surfaces here while a collective hangs.
    pub fn async_error(&self) -> Option<String> {
        if self.aborted {
            return Some("communicator aborted".into());
        }
        let mut state: c_int = NCCL_SUCCESS;
        // SAFETY: `raw` is a live communicator (not aborted/destroyed); `state` is writable.
        let r = unsafe { (self.api.comm_get_async_error)(self.raw, &mut state) };
        if r != NCCL_SUCCESS {
            return Some(format!("ncclCommGetAsyncError: {}", self.api.describe(r)));
        }
        (state != NCCL_SUCCESS && state != NCCL_IN_PROGRESS).then(|| self.api.describe(state))
    }

    /// Aborts the communicator (`ncclCommAbort`): pending operations on it end, and it
    /// cannot be used again. Idempotent.
    pub fn abort(&mut self) {
        if !self.aborted {
            self.aborted = true;
            // SAFETY: `raw` is live and is never used after this (every call checks
            // `aborted` through `live`).
            let _ = unsafe { (self.api.comm_abort)(self.raw) };
        }
    }

    fn live(&self, what: &str) -> Result<RawComm, CudaError> {
        if self.aborted {
            Err(CudaError::Nccl(format!(
                "{what} on rank {}: the communicator was aborted",
                self.rank
            )))
        } else {
            Ok(self.raw)
        }
    }

    /// Enqueues a sum all-reduce of `count` elements on `stream`.
    ///
    /// # Safety
    /// `send` and `recv` are device pointers to at least `count` elements of `ty` that stay
    /// allocated until the stream's work completes.
    pub unsafe fn all_reduce(
        &mut self,
        send: u64,
        recv: u64,
        count: usize,
        ty: NcclType,
        stream: RawStream,
    ) -> Result<(), CudaError> {
        let c = self.live("ncclAllReduce")?;
        // SAFETY: guaranteed by the caller (pointers and sizes); `c` is live.
        let r =
            unsafe { (self.api.all_reduce)(send, recv, count, ty as c_int, NCCL_SUM, c, stream) };
        self.api.check("ncclAllReduce", r)
    }

    /// Enqueues a broadcast of `count` elements from `root`.
    ///
    /// # Safety
    /// As [`Comm::all_reduce`].
    pub unsafe fn broadcast(
        &mut self,
        send: u64,
        recv: u64,
        count: usize,
        ty: NcclType,
        root: usize,
        stream: RawStream,
    ) -> Result<(), CudaError> {
        let c = self.live("ncclBroadcast")?;
        let root = root as c_int;
        // SAFETY: guaranteed by the caller; `c` is live.
        let r = unsafe { (self.api.broadcast)(send, recv, count, ty as c_int, root, c, stream) };
        self.api.check("ncclBroadcast", r)
    }

    /// Enqueues an all-gather: `count` elements per rank, `recv` holds `count · world`.
    ///
    /// # Safety
    /// As [`Comm::all_reduce`], with `recv` of `count · world` elements.
    pub unsafe fn all_gather(
        &mut self,
        send: u64,
        recv: u64,
        count: usize,
        ty: NcclType,
        stream: RawStream,
    ) -> Result<(), CudaError> {
        let c = self.live("ncclAllGather")?;
        // SAFETY: guaranteed by the caller; `c` is live.
        let r = unsafe { (self.api.all_gather)(send, recv, count, ty as c_int, c, stream) };
        self.api.check("ncclAllGather", r)
    }

    /// Enqueues a sum reduce-scatter: `send` holds `count · world`, `recv` `count`.
    ///
    /// # Safety
    /// As [`Comm::all_gather`], with the sizes swapped.
    pub unsafe fn reduce_scatter(
        &mut self,
        send: u64,
        recv: u64,
        count: usize,
        ty: NcclType,
        stream: RawStream,
    ) -> Result<(), CudaError> {
        let c = self.live("ncclReduceScatter")?;
        // SAFETY: guaranteed by the caller; `c` is live.
        let r = unsafe {
            (self.api.reduce_scatter)(send, recv, count, ty as c_int, NCCL_SUM, c, stream)
        };
        self.api.check("ncclReduceScatter", r)
    }

    /// Enqueues an all-to-all of `chunk` elements per peer as one group of sends and
    /// receives: chunk `r` of `send` goes to rank `r`, chunk `r` of `recv` comes from it.
    ///
    /// # Safety
    /// `send` and `recv` hold `chunk · world` elements of `ty` (element size `elem`).
    pub unsafe fn all_to_all(
        &mut self,
        send: u64,
        recv: u64,
        chunk: usize,
        ty: NcclType,
        elem: usize,
        stream: RawStream,
    ) -> Result<(), CudaError> {
        let c = self.live("ncclSend/ncclRecv")?;
        let api = self.api;
        // SAFETY: group calls take no arguments.
        api.check("ncclGroupStart", unsafe { (api.group_start)() })?;
        let mut first_err = Ok(());
        for peer in 0..self.world {
            let off = (peer * chunk * elem) as u64;
            // SAFETY: the chunk at `off` lies inside both buffers (caller's guarantee).
            let s = unsafe { (api.send)(send + off, chunk, ty as c_int, peer as c_int, c, stream) };
            // SAFETY: as above.
            let r = unsafe { (api.recv)(recv + off, chunk, ty as c_int, peer as c_int, c, stream) };
            if first_err.is_ok() {
                first_err = api
                    .check("ncclSend", s)
                    .and_then(|_| api.check("ncclRecv", r));
            }
        }
        // The group is always closed, even after a failed send/recv (an open group would
        // make every later NCCL call of this thread part of it).
        // SAFETY: closes the group opened above.
        let end = api.check("ncclGroupEnd", unsafe { (api.group_end)() });
        first_err.and(end)
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if !self.aborted {
            // SAFETY: `raw` is live and never used again. Errors are ignored (a destroy
            // that fails leaves nothing to do); nothing here panics.
            let _ = unsafe { (self.api.comm_destroy)(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without NCCL the API is an error naming the file looked for and where, not a panic
    /// (on a machine with NCCL this checks nothing).
    #[test]
    fn missing_nccl_is_an_error_listing_the_search() {
        if let Err(e) = NcclApi::get() {
            let e = e.to_string();
            assert!(
                e.contains("CUDA library 'nccl'") && e.contains("libnccl.so.2"),
                "{e}"
            );
        }
    }
}
