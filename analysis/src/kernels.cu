// pyusage GPU kernels, compiled at run time with NVRTC (see gpu.rs).
//
// Every count is "distinct keys": a key (bucket, x, y) packed as bucket << 56 | x << 32 | y is
// inserted into an open-addressing hash set with atomicCAS; the thread that inserts it first
// adds one to out[bucket * width + x]. Integer atomics only, so the counts are exact and the
// same whatever the thread order.
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

#define EMPTY 0xffffffffffffffffULL

__device__ __forceinline__ u64 mix(u64 k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

// Inserts key; returns 1 if this call inserted it. *slot is where it lives.
__device__ __forceinline__ int insert(u64* set, u64 mask, u64 key, u64* slot) {
    u64 h = mix(key) & mask;
    for (;;) {
        u64 old = atomicCAS(&set[h], EMPTY, key);
        if (old == EMPTY) { *slot = h; return 1; }
        if (old == key) { *slot = h; return 0; }
        h = (h + 1) & mask;
    }
}

__device__ __forceinline__ u64 find(const u64* set, u64 mask, u64 key) {
    u64 h = mix(key) & mask;
    for (;;) {
        u64 v = set[h];
        if (v == key) return h;
        if (v == EMPTY) return EMPTY;
        h = (h + 1) & mask;
    }
}

__device__ __forceinline__ u64 pack(u32 b, u32 x, u32 y) {
    return ((u64)b << 56) | ((u64)(x & 0xffffff) << 32) | (u64)y;
}

#define GRID_STRIDE(i, n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

extern "C" __global__ void fill(u64* p, u64 n, u64 v) {
    GRID_STRIDE(i, n) { p[i] = v; }
}

// Rows per bucket, through a per-block histogram in shared memory (few buckets, many rows).
extern "C" __global__ void count_rows(u64 n, const u32* month, const u32* lut, u32 month0,
                                      u32 nbuckets, u64* out) {
    __shared__ u64 h[256];
    for (u32 k = threadIdx.x; k < 256; k += blockDim.x) h[k] = 0;
    __syncthreads();
    GRID_STRIDE(i, n) { atomicAdd(&h[lut[month[i] - month0]], 1ULL); }
    __syncthreads();
    for (u32 k = threadIdx.x; k < nbuckets; k += blockDim.x)
        if (h[k]) atomicAdd(&out[k], h[k]);
}

// Distinct (bucket, x, y) among rows with all `need` flag bits; x = xa * xmul + xb (each
// optional). out[bucket * width + x] counts them.
extern "C" __global__ void distinct_count(u64 n, const u32* month, const u32* lut, u32 month0,
                                          const u8* flags, u32 need,
                                          const u32* xa, u32 has_xa, u32 xmul,
                                          const u32* xb, u32 has_xb, const u32* y,
                                          u64* set, u64 mask, u64* out, u32 width) {
    GRID_STRIDE(i, n) {
        if ((flags[i] & need) != need) continue;
        u32 b = lut[month[i] - month0];
        u32 x = (has_xa ? xa[i] * xmul : 0) + (has_xb ? xb[i] : 0);
        u64 slot;
        if (insert(set, mask, pack(b, x, y[i]), &slot)) atomicAdd(&out[(u64)b * width + x], 1ULL);
    }
}

// Per (bucket, job) among rows with `need`: OR of the bits of the job's pair-row packages
// (rindex[bucket * npkg + package], 255 = not a row).
extern "C" __global__ void job_masks(u64 n, const u32* month, const u32* lut, u32 month0,
                                     const u8* flags, u32 need, const u32* pkg, const u32* job,
                                     const u8* rindex, u32 npkg,
                                     u64* keys, u64* vals, u64 mask) {
    GRID_STRIDE(i, n) {
        if ((flags[i] & need) != need) continue;
        u32 b = lut[month[i] - month0];
        u64 slot;
        insert(keys, mask, pack(b, 0, job[i]), &slot);
        u8 r = rindex[(u64)b * npkg + pkg[i]];
        if (r != 255) atomicOr(&vals[slot], 1ULL << r);
    }
}

// For each distinct (bucket, package, job) among rows with `need`: one more job using both
// the package and each pair-row package of the job.
extern "C" __global__ void pairs(u64 n, const u32* month, const u32* lut, u32 month0,
                                 const u8* flags, u32 need, const u32* pkg, const u32* job,
                                 const u64* mkeys, const u64* mvals, u64 mmask,
                                 u64* set, u64 smask, u64* out, u32 npkg, u32 rows) {
    GRID_STRIDE(i, n) {
        if ((flags[i] & need) != need) continue;
        u32 b = lut[month[i] - month0];
        u64 slot;
        if (!insert(set, smask, pack(b, pkg[i], job[i]), &slot)) continue;
        u64 at = find(mkeys, mmask, pack(b, 0, job[i]));
        u64 m = at == EMPTY ? 0 : mvals[at];
        while (m) {
            u32 r = __ffsll((long long)m) - 1;
            m &= m - 1;
            atomicAdd(&out[((u64)b * rows + r) * npkg + pkg[i]], 1ULL);
        }
    }
}

// Per (bucket, job) among numpy/scipy job rows: bit 63 (seen) | 1 << blas.
extern "C" __global__ void blas_masks(u64 n, const u32* month, const u32* lut, u32 month0,
                                      const u8* flags, u32 need, const u32* blas, const u32* job,
                                      u64* keys, u64* vals, u64 mask) {
    GRID_STRIDE(i, n) {
        if ((flags[i] & need) != need) continue;
        u32 b = lut[month[i] - month0];
        u64 slot;
        insert(keys, mask, pack(b, 0, job[i]), &slot);
        u64 bit = blas[i] < 63 ? (1ULL << blas[i]) : 0ULL;
        atomicOr(&vals[slot], (1ULL << 63) | bit);
    }
}

// Jobs per BLAS backend seen (column 0: none seen).
extern "C" __global__ void blas_count(u64 cap, const u64* keys, const u64* vals, u64* out,
                                      u32 width) {
    GRID_STRIDE(s, cap) {
        u64 k = keys[s];
        if (k == EMPTY) continue;
        u64 b = k >> 56;
        u64 m = vals[s] & ~(1ULL << 63);
        if (!m) { atomicAdd(&out[b * width], 1ULL); continue; }
        while (m) {
            u32 x = __ffsll((long long)m) - 1;
            m &= m - 1;
            atomicAdd(&out[b * width + 1 + x], 1ULL);
        }
    }
}
