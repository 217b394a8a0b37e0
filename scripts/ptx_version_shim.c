/*
 * ptx_version_shim.c — lets an older NVIDIA driver load the PTX that a newer NVRTC wrote, for
 * scripts/device-check.sh on a GPU machine whose only NVRTC came with PyTorch's pip wheels.
 *
 * Burn's CUDA runtime (CubeCL) compiles its kernels with NVRTC to PTX and hands the PTX to the
 * driver (cuModuleLoadData), which refuses a PTX ISA newer than it knows
 * (CUDA_ERROR_UNSUPPORTED_PTX_VERSION): NVRTC 13.2 writes `.version 9.2`, a CUDA 13.0 driver
 * (R580) reads at most 9.0. The kernels use nothing from the newer ISA, so this shim, preloaded
 * (LD_PRELOAD=ptx-shim.so PTX_SHIM_VERSION=9.0), rewrites the `.version` line of PTX images
 * that are newer than PTX_SHIM_VERSION before they reach the driver. cudarc looks driver
 * functions up with dlsym, so the shim wraps dlsym and returns its own cuModuleLoadData and
 * cuModuleLoadDataEx; everything else passes through untouched. Cubin (ELF) images, and PTX no
 * newer than the target, are passed on as they are. Set PTX_SHIM_VERBOSE=1 to log rewrites.
 *
 * A workaround for benchmarking only: the fix in the product is to load NVRTC's cubin
 * (nvrtcGetCUBIN, which the driver runs under CUDA's minor-version compatibility) instead of PTX.
 *
 * Build: gcc -shared -fPIC -O2 -o ptx-shim.so ptx_version_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef void *CUmodule;
typedef int CUjit_option;
typedef CUresult (*load_data_fn)(CUmodule *, const void *);
typedef CUresult (*load_data_ex_fn)(CUmodule *, const void *, unsigned int, CUjit_option *, void **);
typedef void *(*dlsym_fn)(void *, const char *);

static dlsym_fn real_dlsym;
static load_data_fn real_load_data;
static load_data_ex_fn real_load_data_ex;

static dlsym_fn next_dlsym(void) {
    if (!real_dlsym) {
        /* glibc ≥ 2.34 keeps dlsym in libc under GLIBC_2.34; older ones in libdl under 2.2.5. */
        real_dlsym = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
        if (!real_dlsym) {
            real_dlsym = (dlsym_fn)dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
        }
    }
    return real_dlsym;
}

/* A copy of `image` with its `.version X.Y` lowered to PTX_SHIM_VERSION, or NULL to keep it. */
static char *patched(const void *image) {
    const char *ptx = (const char *)image;
    const char *target = getenv("PTX_SHIM_VERSION");
    if (!ptx || !target || (unsigned char)ptx[0] == 0x7f /* ELF: a cubin */) {
        return NULL;
    }
    int want_major, want_minor, major, minor;
    if (sscanf(target, "%d.%d", &want_major, &want_minor) != 2) {
        return NULL;
    }
    const char *line = strstr(ptx, ".version ");
    if (!line || sscanf(line, ".version %d.%d", &major, &minor) != 2) {
        return NULL;
    }
    if (major < want_major || (major == want_major && minor <= want_minor)) {
        return NULL;
    }
    const char *end = strchr(line, '\n');
    if (!end) {
        return NULL;
    }
    char version[32];
    int n = snprintf(version, sizeof version, ".version %d.%d", want_major, want_minor);
    size_t head = (size_t)(line - ptx), tail = strlen(end);
    char *out = malloc(head + (size_t)n + tail + 1);
    if (!out) {
        return NULL;
    }
    memcpy(out, ptx, head);
    memcpy(out + head, version, (size_t)n);
    memcpy(out + head + n, end, tail + 1);
    if (getenv("PTX_SHIM_VERBOSE")) {
        fprintf(stderr, "ptx-shim: PTX .version %d.%d -> %d.%d\n", major, minor, want_major, want_minor);
    }
    return out;
}

static CUresult shim_load_data(CUmodule *module, const void *image) {
    char *copy = patched(image);
    CUresult r = real_load_data(module, copy ? copy : image);
    free(copy);
    return r;
}

static CUresult shim_load_data_ex(CUmodule *module, const void *image, unsigned int n, CUjit_option *options,
                                  void **values) {
    char *copy = patched(image);
    CUresult r = real_load_data_ex(module, copy ? copy : image, n, options, values);
    free(copy);
    return r;
}

void *dlsym(void *handle, const char *name) {
    dlsym_fn next = next_dlsym();
    if (!next) {
        return NULL;
    }
    void *f = next(handle, name);
    if (f) {
        if (strcmp(name, "cuModuleLoadData") == 0) {
            real_load_data = (load_data_fn)f;
            return (void *)shim_load_data;
        }
        if (strcmp(name, "cuModuleLoadDataEx") == 0) {
            real_load_data_ex = (load_data_ex_fn)f;
            return (void *)shim_load_data_ex;
        }
    }
    return f;
}
