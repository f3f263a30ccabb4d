/*
 * driver.c - nspv2_driver_run: native threads cycling sessions and lookups
 * through the public calls, for benchmarks and stress runs.
 */
#include "host_internal.h"

/* ------------------------------------------------------------------------ */
/* native driver                                                             */

typedef struct driver_thread {
    const nspv2_driver_config *cfg;
    nspv2_driver_result res;
    nspv2_thread thread;
    int started;
} driver_thread;

static void count_code(nspv2_driver_result *r, int32_t code)
{
    for (uint32_t i = 0; i < r->n_codes; i++) {
        if (r->codes[i] == code) {
            r->counts[i]++;
            return;
        }
    }
    if (r->n_codes < NSPV2_DRIVER_MAX_CODES) { /* further codes are not counted */
        r->codes[r->n_codes] = code;
        r->counts[r->n_codes] = 1;
        r->n_codes++;
    }
}

static int32_t outcome(INT r) { return r == NO_ERROR ? NO_ERROR : WSAGetLastError(); }

/* One driver thread's cycles (see nspv2_driver_run). */
static void driver_cycles(void *p)
{
    driver_thread *dt = p;
    const nspv2_driver_config *cfg = dt->cfg;
    nspv2_driver_result *res = &dt->res;
    size_t cap = cfg->buffer_size ? cfg->buffer_size : 1;
    void *buf = malloc(cap);
    WSAQUERYSETW qs;
    memset(&qs, 0, sizeof qs);
    qs.dwSize = sizeof qs;
    qs.dwNameSpace = cfg->name_space;
    qs.lpNSProviderId = (LPGUID)cfg->provider_id;
    qs.lpszServiceInstanceName = (LPWSTR)cfg->service_name;

    for (uint32_t c = 1; c <= cfg->cycles; c++) {
        uint64_t sid = 0;
        int32_t code = outcome(nspv2_session_open(&sid));
        count_code(res, code);
        res->cycles_done++;
        if (code != NO_ERROR)
            continue;
        if (cfg->session_only) {
            /* Startup now, then Cleanup or Rundown below: a session cycle */
            count_code(res, outcome(nspv2_session_start(sid, cfg->name_space, cfg->provider_id)));
        } else {
            HANDLE h = NULL;
            code = outcome(nspv2_lookup_begin(sid, &qs, cfg->control_flags, &h));
            count_code(res, code);
            if (code == NO_ERROR) {
                size_t want = cfg->buffer_size; /* every lookup starts short again */
                for (;;) {
                    DWORD len = buf ? (DWORD)want : 0;
                    code = outcome(nspv2_lookup_next(h, cfg->control_flags, &len, buf));
                    count_code(res, code);
                    if (code == WSAEFAULT && cfg->grow_on_efault && len > want) {
                        if (len > cap) {
                            void *bigger = realloc(buf, len);
                            if (!bigger)
                                break;
                            buf = bigger;
                            cap = len;
                        }
                        want = len;
                        continue; /* the same result, now that it fits */
                    }
                    if (code != NO_ERROR)
                        break;
                    res->results++;
                }
                count_code(res, outcome(nspv2_lookup_end(h)));
            }
        }
        if (cfg->abandon_every && c % cfg->abandon_every == 0)
            count_code(res, outcome(nspv2_session_abandon(sid)));
        else
            count_code(res, outcome(nspv2_session_close(sid)));
    }
    free(buf);
}

/* Adds one thread's counts to the run's. */
static void add_result(nspv2_driver_result *out, const nspv2_driver_result *r)
{
    out->cycles_done += r->cycles_done;
    out->results += r->results;
    for (uint32_t k = 0; k < r->n_codes; k++) {
        uint32_t j = 0;
        while (j < out->n_codes && out->codes[j] != r->codes[k])
            j++;
        if (j == out->n_codes) {
            if (j == NSPV2_DRIVER_MAX_CODES)
                continue;
            out->codes[j] = r->codes[k];
            out->n_codes++;
        }
        out->counts[j] += r->counts[k];
    }
}

/* A thread of nspv2_driver_run: the host's own, so it ends as they do. */
static void driver_main(void *p)
{
    driver_cycles(p);
    nspv2_pin_thread_detach();
}

NSPV2_HOST_API INT nspv2_driver_run(const nspv2_driver_config *cfg, nspv2_driver_result *out)
{
    host_init();
    if (!cfg || !out || cfg->threads == 0 || cfg->threads > 1024)
        return host_fail(WSAEINVAL);
    memset(out, 0, sizeof *out);
    driver_thread *dts = calloc(cfg->threads, sizeof *dts);
    if (!dts)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    uint64_t t0 = nspv2_now_ns();
    for (uint32_t i = 0; i < cfg->threads; i++) {
        dts[i].cfg = cfg;
        dts[i].started = nspv2_thread_create(&dts[i].thread, driver_main, &dts[i]) == 0;
    }
    for (uint32_t i = 0; i < cfg->threads; i++)
        if (dts[i].started)
            nspv2_thread_join(dts[i].thread);
    out->elapsed_ns = nspv2_now_ns() - t0;
    int all_started = 1;
    for (uint32_t i = 0; i < cfg->threads; i++) {
        all_started &= dts[i].started;
        add_result(out, &dts[i].res);
    }
    free(dts);
    if (!all_started)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    return NO_ERROR;
}

/* ------------------------------------------------------------------------ */
/* thread exits                                                              */

/* A thread of nspv2_driver_thread_exits: driver_cycles, then it ends as a
 * program's own thread would, without the host threads' detach. */
static void exits_main(void *p) { driver_cycles(p); }

NSPV2_HOST_API INT nspv2_driver_thread_exits(const nspv2_driver_config *cfg, uint32_t total_threads,
                                             nspv2_driver_result *out)
{
    host_init();
    if (!cfg || !out || cfg->threads == 0 || cfg->threads > 1024 || total_threads == 0)
        return host_fail(WSAEINVAL);
    memset(out, 0, sizeof *out);
    uint32_t wave = cfg->threads < total_threads ? cfg->threads : total_threads;
    driver_thread *dts = calloc(wave, sizeof *dts);
    if (!dts)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    int all_started = 1;
    uint64_t t0 = nspv2_now_ns();
    for (uint32_t done = 0; done < total_threads;) {
        uint32_t n = total_threads - done < wave ? total_threads - done : wave;
        memset(dts, 0, n * sizeof *dts);
        for (uint32_t i = 0; i < n; i++) {
            dts[i].cfg = cfg;
            dts[i].started = nspv2_thread_create(&dts[i].thread, exits_main, &dts[i]) == 0;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (dts[i].started)
                nspv2_thread_join(dts[i].thread);
            all_started &= dts[i].started;
            add_result(out, &dts[i].res);
        }
        done += n;
    }
    out->elapsed_ns = nspv2_now_ns() - t0;
    free(dts);
    if (!all_started)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    return NO_ERROR;
}
