/*
 * test_driver.c - tests of nspv2_driver_run and nspv2_driver_thread_exits, the
 * native load driver.
 */
#include "test_support.h"

/* ------------------------------------------------------------------------ */
/* the driver                                                                */

static uint64_t code_count(const nspv2_driver_result *r, int32_t code)
{
    for (uint32_t i = 0; i < r->n_codes; i++)
        if (r->codes[i] == code)
            return r->counts[i];
    return 0;
}

static void print_driver(const char *what, const nspv2_driver_result *r)
{
    printf("     driver %s: %" PRIu64 " cycles, %" PRIu64 " results, %.1f ms;", what,
           r->cycles_done, r->results, (double)r->elapsed_ns / 1e6);
    for (uint32_t i = 0; i < r->n_codes; i++)
        printf(" [%d]=%" PRIu64, (int)r->codes[i], r->counts[i]);
    printf("\n");
}

TEST(test_driver)
{
    fresh();
    advertise_ref();
    /* a session keeps two names of example.com (and one elsewhere) signed
     * in while the driver runs */
    uint64_t keeper = open_session();
    CHECK_OK(sign_in(keeper, "bob@example.com", MISTATUS_BUSY));
    CHECK_OK(sign_in(keeper, "alice@example.com", MISTATUS_AWAY));
    CHECK_OK(sign_in(keeper, "carol@example.org", MISTATUS_ONLINE));
    nspv2_host_stats_reset();
    nspv2_driver_result r;
    CHECK_ERR(nspv2_driver_run(NULL, &r), WSAEINVAL);
    nspv2_driver_config cfg;
    memset(&cfg, 0, sizeof cfg);
    CHECK_ERR(nspv2_driver_run(&cfg, &r), WSAEINVAL); /* 0 threads */
    cfg.threads = 4;
    CHECK_ERR(nspv2_driver_run(&cfg, NULL), WSAEINVAL);

    const uint64_t T = 4, C = 2000, A = 7;
    cfg.threads = (uint32_t)T;
    cfg.cycles = (uint32_t)C;
    cfg.abandon_every = (uint32_t)A;
    cfg.buffer_size = 4096;
    cfg.name_space = NS_EMAIL;
    cfg.provider_id = NULL;
    cfg.service_name = W("*@example.com");
    cfg.control_flags = LUP_RETURN_ALL;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x2000 *@example.com", &r);
    const uint64_t cycles = T * C, abandons = T * (C / A);
    CHECK(r.cycles_done == cycles);
    CHECK(r.results == 2 * cycles);
    /* open, begin, 2 x next, end, close/abandon succeed; 1 x next ends */
    CHECK(code_count(&r, NO_ERROR) == 6 * cycles);
    CHECK(code_count(&r, WSA_E_NO_MORE) == cycles);
    CHECK(r.n_codes == 2);
    CHECK(r.elapsed_ns > 0);
    nspv2_host_stats st = stats();
    CHECK(st.sessions_open == 1 && /* the keeper */ st.lookups_open == 0 && st.async_pending == 0);
    CHECK(st.startups == cycles);
    CHECK(st.rundowns == abandons);
    CHECK(st.cleanups == cycles - abandons);
    CHECK(st.provider_faults == 0 && st.late_completions == 0);
    printf("     stats: startups %" PRIu64 ", cleanups %" PRIu64 ", rundowns %" PRIu64 "\n",
           st.startups, st.cleanups, st.rundowns);

    /* a buffer too small: every next stops at WSAEFAULT */
    nspv2_host_stats_reset();
    cfg.cycles = 200;
    cfg.buffer_size = 64;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x200 buffer 64", &r);
    CHECK(r.results == 0);
    CHECK(code_count(&r, WSAEFAULT) == 800);
    CHECK(code_count(&r, NO_ERROR) == 800 * 4);

    /* unknown name: begin fails, nothing else but open and close */
    cfg.buffer_size = 4096;
    cfg.service_name = W("nobody@example.com");
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    CHECK(code_count(&r, WSASERVICE_NOT_FOUND) == 800);
    CHECK(code_count(&r, NO_ERROR) == 800 * 2);

    /* sessions only */
    nspv2_host_stats_reset();
    cfg.session_only = 1;
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x200 session_only", &r);
    /* open, nspv2_session_start (Startup), close (Cleanup) */
    CHECK(code_count(&r, NO_ERROR) == 800 * 3 && r.n_codes == 1);
    st = stats();
    CHECK(st.startups == 800 && st.sessions_open == 1); /* the keeper */
    CHECK_OK(nspv2_session_close(keeper));

    /* the yardstick: the bench provider, one result per lookup */
    advertise_bench();
    nspv2_host_stats_reset();
    cfg.session_only = 0;
    cfg.cycles = (uint32_t)C;
    cfg.abandon_every = (uint32_t)A;
    cfg.provider_id = &nspv2_bench_provider_id;
    cfg.service_name = W("alice@example.com");
    CHECK_OK(nspv2_driver_run(&cfg, &r));
    print_driver("4x2000 bench alice@example.com", &r);
    CHECK(r.cycles_done == cycles && r.results == cycles);
    /* open, begin, next, end, close/abandon succeed; 1 x next ends */
    CHECK(code_count(&r, NO_ERROR) == 5 * cycles);
    CHECK(code_count(&r, WSA_E_NO_MORE) == cycles);
    CHECK(r.n_codes == 2);
    st = stats();
    CHECK(st.sessions_open == 0 && st.lookups_open == 0 && st.async_pending == 0);
    CHECK(st.startups == cycles && st.rundowns == abandons);
    CHECK(st.cleanups == cycles - abandons);
    CHECK(st.provider_faults == 0 && st.late_completions == 0);
}

TEST(test_driver_thread_exits)
{
    fresh();
    advertise_bench();
    nspv2_host_stats_reset();
    nspv2_driver_result r;
    nspv2_driver_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.cycles = 1;
    cfg.buffer_size = 4096;
    cfg.name_space = NS_EMAIL;
    cfg.provider_id = &nspv2_bench_provider_id;
    cfg.service_name = W("alice@example.com");
    cfg.control_flags = LUP_RETURN_ALL;
    CHECK_ERR(nspv2_driver_thread_exits(&cfg, 10, &r), WSAEINVAL); /* 0 threads at once */
    cfg.threads = 1025;
    CHECK_ERR(nspv2_driver_thread_exits(&cfg, 10, &r), WSAEINVAL);
    cfg.threads = 8;
    CHECK_ERR(nspv2_driver_thread_exits(&cfg, 0, &r), WSAEINVAL);
    CHECK_ERR(nspv2_driver_thread_exits(NULL, 10, &r), WSAEINVAL);
    CHECK_ERR(nspv2_driver_thread_exits(&cfg, 10, NULL), WSAEINVAL);

    /* 1000 threads, 8 at a time (the last wave short), one cycle each */
    const uint64_t N = 1003;
    CHECK_OK(nspv2_driver_thread_exits(&cfg, (uint32_t)N, &r));
    print_driver("1003 thread exits, 8 at a time", &r);
    CHECK(r.cycles_done == N && r.results == N);
    /* open, begin, next, end, close succeed; 1 x next ends */
    CHECK(code_count(&r, NO_ERROR) == 5 * N);
    CHECK(code_count(&r, WSA_E_NO_MORE) == N);
    CHECK(r.n_codes == 2 && r.elapsed_ns > 0);
    nspv2_host_stats st = stats();
    CHECK(st.startups == N && st.cleanups == N && st.rundowns == 0);
    CHECK(st.sessions_open == 0 && st.lookups_open == 0 && st.async_pending == 0);

    /* fewer threads than a wave; three cycles each, every second abandoned */
    nspv2_host_stats_reset();
    cfg.threads = 64;
    cfg.cycles = 3;
    cfg.abandon_every = 2;
    CHECK_OK(nspv2_driver_thread_exits(&cfg, 5, &r));
    CHECK(r.cycles_done == 15 && r.results == 15);
    st = stats();
    CHECK(st.startups == 15 && st.rundowns == 5 && st.cleanups == 10);
    CHECK(st.sessions_open == 0 && st.lookups_open == 0);
}

void run_driver_tests(void)
{
    RUN(test_driver);
    RUN(test_driver_thread_exits);
}
