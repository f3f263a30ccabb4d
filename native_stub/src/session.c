/*
 * session.c - the client side of the host: sessions and their provider
 * sessions (NSPv2Startup on first use), lookups (Begin, NextEx with its
 * async completion, End), registration (SetServiceEx), and the
 * Winsock-named calls in the thread's current session.
 */
#include "host_internal.h"

/* ------------------------------------------------------------------------ */
/* sessions and provider sessions                                            */

psess *session_find_ps_L(session *s, const provider *p)
{
    for (size_t i = 0; i < s->nps; i++)
        if (s->ps[i]->prov == p)
            return s->ps[i];
    return NULL;
}

/* Removes ps from its session's list; the caller then owns the list's
 * reference. */
void session_detach_ps_L(session *s, psess *ps)
{
    for (size_t i = 0; i < s->nps; i++) {
        if (s->ps[i] == ps) {
            s->ps[i] = s->ps[--s->nps];
            ps->listed = 0;
            return;
        }
    }
}

/* The psess of (session, provider) with a call held, running NSPv2Startup
 * first if the session has not started the provider. Returns 0 or an error;
 * the lock is held on entry and on return (released around Startup).
 * *reentered (when given) is set when the error is WSAEINPROGRESS because
 * this thread runs that Startup (the provider was not called). */
static int ps_acquire_L(uint64_t session_id, provider *p, psess **out, todo *t, int *reentered)
{
    *out = NULL;
    if (reentered)
        *reentered = 0;
    for (;;) {
        session *s = idmap_get(&host_g.sessions, session_id);
        if (!s)
            return WSAEINVAL;
        if (p->removed)
            return WSAEINVAL;
        psess *ps = session_find_ps_L(s, p);
        if (ps && ps->state == PS_STARTING) {
            /* Rule: a call that needs a (session, provider) whose Startup
             * is running waits for it to finish -- unless this very thread
             * is running that Startup (at any depth: Startup -> host ->
             * another provider's Startup -> host counts too). Waiting would
             * wait for itself, forever, so the call fails at once with
             * WSAEINPROGRESS: Winsock's code for a call made on a thread
             * while a blocking call (here, the Startup this call would
             * wait for) is in progress on that same thread. The Startup is
             * left to finish; the session starts (or not) with its result.
             * Other threads still wait. */
            if (startup_running_here(ps)) {
                if (reentered)
                    *reentered = 1;
                return WSAEINPROGRESS;
            }
            nspv2_cond_wait(&host_g.cv, &host_g.lock);
            continue;
        }
        if (ps) {
            if (ps->end_kind != END_NONE || ps->state != PS_STARTED)
                return WSAEINVAL;
            ps_call_hold_L(ps);
            *out = ps;
            return 0;
        }
        if (s->nps == s->capps) {
            size_t ncap = s->capps ? s->capps * 2 : 4;
            psess **nl = realloc(s->ps, ncap * sizeof *nl);
            if (!nl)
                return WSA_NOT_ENOUGH_MEMORY;
            s->ps = nl;
            s->capps = ncap;
        }
        ps = calloc(1, sizeof *ps);
        if (!ps)
            return WSA_NOT_ENOUGH_MEMORY;
        ps->prov = p;
        p->refs++;
        ps->state = PS_STARTING;
        ps->listed = 1;
        ps->refs = 1; /* the session's list */
        s->ps[s->nps++] = ps;
        ps_call_hold_L(ps);

        int err = 0;
        LPVOID arg = NULL;
        if (p->fn.startup) {
            GUID id = p->id;
            startup_frame frame; /* ps is held until after startup_leave */
            startup_enter(&frame, ps);
            host_unlock();
            int pin = prov_enter();
            INT r = SOCKET_ERROR;
            if (pin != PIN_REFUSED) {
                WSASetLastError(0);
                r = p->fn.startup(&id, &arg);
            }
            prov_leave(pin);
            if (pin == PIN_REFUSED) {
                err = WSASYSNOTREADY; /* as the provider's error */
            } else if (r != NO_ERROR) {
                err = provider_error();
                /* An optional Startup left to a WSAEOPNOTSUPP stub: the
                 * provider keeps no session state; go on with a NULL
                 * session argument, as with a NULL Startup slot. */
                if (err == WSAEOPNOTSUPP) {
                    err = 0;
                    arg = NULL;
                }
            }
            host_lock();
            startup_leave(&frame);
            if (pin != PIN_REFUSED)
                host_g.startups++;
        }
        nspv2_cond_broadcast(&host_g.cv);
        if (err) {
            ps->state = PS_ENDED; /* never started: nothing to end */
            session *s2 = ps->listed ? idmap_get(&host_g.sessions, session_id) : NULL;
            if (s2) {
                session_detach_ps_L(s2, ps);
                ps_unref_L(ps); /* the list's reference; ours remains */
            }
            ps_call_release_L(ps, t);
            return err;
        }
        ps->arg = arg;
        ps->state = PS_STARTED;
        if (ps->end_kind != END_NONE) { /* closed or unadvertised meanwhile */
            ps_call_release_L(ps, t);
            return WSAEINVAL;
        }
        *out = ps;
        return 0;
    }
}

NSPV2_HOST_API INT nspv2_session_open(uint64_t *session_id)
{
    host_init();
    if (!session_id)
        return host_fail(WSAEFAULT);
    session *s = calloc(1, sizeof *s);
    if (!s)
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    host_lock();
    s->id = fresh_id(&host_g.next_session, &host_g.sessions, 0);
    if (idmap_put(&host_g.sessions, s->id, s) != 0) {
        host_unlock();
        free(s);
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    }
    *session_id = s->id;
    host_unlock();
    return NO_ERROR;
}

static void lookup_unref_L(lookup *lk)
{
    if (--lk->refs)
        return;
    for (size_t i = 0; i < lk->nparts; i++)
        ps_unref_L(lk->parts[i].ps);
    free(lk->parts);
    free(lk);
}

/* Ends a lookup already removed from the table: cancels a waiting next and
 * queues NSPv2LookupServiceEnd for every part. Drops the table's reference. */
static void lookup_end_L(lookup *lk, todo *t)
{
    lk->ended = 1;
    if (lk->pending) {
        lk->pending->cancelled = 1;
        nspv2_cond_broadcast(&host_g.cv);
    }
    for (size_t i = 0; i < lk->nparts; i++)
        part_end_L(&lk->parts[i], t);
    if (lk->sess) {
        if (lk->sprev)
            lk->sprev->snext = lk->snext;
        else
            lk->sess->lookups = lk->snext;
        if (lk->snext)
            lk->snext->sprev = lk->sprev;
        lk->sess = NULL;
        lk->sprev = lk->snext = NULL;
    }
    nspv2_cond_broadcast(&host_g.cv); /* nexts waiting for busy */
    lookup_unref_L(lk);
}

static INT session_end(uint64_t session_id, int kind)
{
    host_init();
    todo t = {0};
    host_lock();
    session *s = idmap_remove(&host_g.sessions, session_id);
    if (!s) {
        host_unlock();
        return host_fail(WSAEINVAL);
    }
    while (s->lookups) {
        lookup *lk = s->lookups;
        idmap_remove(&host_g.lookups, lk->id);
        lookup_end_L(lk, &t); /* unlinks it */
    }
    for (size_t i = 0; i < s->nps; i++) {
        psess *ps = s->ps[i];
        ps->listed = 0;
        ps_request_end_L(ps, kind, &t);
        ps_unref_L(ps);
    }
    free(s->ps);
    free(s);
    host_unlock();
    todo_run(&t);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_session_close(uint64_t session_id)
{
    return session_end(session_id, END_CLEANUP);
}

NSPV2_HOST_API INT nspv2_session_abandon(uint64_t session_id)
{
    return session_end(session_id, END_RUNDOWN);
}

int session_info(uint64_t session_id, uint32_t *providers_started, uint32_t *lookups_open)
{
    host_init();
    uint32_t started = 0, lookups = 0;
    host_lock();
    const session *s = idmap_get(&host_g.sessions, session_id);
    if (s) {
        for (size_t i = 0; i < s->nps; i++)
            if (s->ps[i]->state == PS_STARTED && s->ps[i]->end_kind == END_NONE)
                started++;
        for (const lookup *lk = s->lookups; lk; lk = lk->snext)
            lookups++;
    }
    host_unlock();
    *providers_started = started;
    *lookups_open = lookups;
    return s ? 0 : WSAEINVAL;
}

NSPV2_HOST_API INT nspv2_session_enter(uint64_t session_id)
{
    host_init();
    if (session_id) {
        host_lock();
        int known = idmap_get(&host_g.sessions, session_id) != NULL;
        host_unlock();
        if (!known)
            return host_fail(WSAEINVAL);
    }
    set_current_session(session_id);
    return NO_ERROR;
}

/* ------------------------------------------------------------------------ */
/* client-facing lookups                                                     */

/* The end of a call routed to providers: leaves the lock, runs what was
 * put off, releases the route; fails with first_err (WSASERVICE_NOT_FOUND
 * when no provider gave one) if failed, else NO_ERROR. */
static INT route_done_L(todo *t, provider **route, size_t nroute, int failed, int first_err)
{
    host_unlock();
    todo_run(t);
    route_release(route, nroute);
    if (failed)
        return host_fail(first_err ? first_err : WSASERVICE_NOT_FOUND);
    return NO_ERROR;
}

NSPV2_HOST_API INT nspv2_lookup_begin(uint64_t session_id, LPWSAQUERYSETW lpqsRestrictions,
                                      DWORD dwControlFlags, LPHANDLE lphLookup)
{
    host_init();
    int err = check_query_set(lpqsRestrictions);
    if (err)
        return host_fail(err);
    if (!lphLookup)
        return host_fail(WSAEFAULT);

    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    nspv2_catalog *cat = NULL;
    if ((err = nspv2_catalog_snapshot(&cat)) != 0)
        return host_fail(err);
    host_lock();
    err = session_route_L(session_id, cat, lpqsRestrictions->dwNameSpace,
                          lpqsRestrictions->lpNSProviderId,
                          lpqsRestrictions->lpszServiceInstanceName, &route, &nroute);
    host_unlock();
    nspv2_catalog_release(cat);
    if (err)
        return host_fail(err);
    host_lock();
    lookup_part *parts = calloc(nroute, sizeof *parts);
    lookup *lk = calloc(1, sizeof *lk);
    if (!parts || !lk) {
        host_unlock();
        free(parts);
        free(lk);
        route_release(route, nroute);
        return host_fail(WSA_NOT_ENOUGH_MEMORY);
    }
    size_t nparts = 0;
    size_t dropped = 0; /* providers whose Startup or Begin failed */
    int first_err = 0;
    for (size_t i = 0; i < nroute; i++) {
        provider *p = route[i];
        psess *ps;
        int reentered;
        int e = ps_acquire_L(session_id, p, &ps, &t, &reentered);
        if (e) {
            if (!reentered)
                dropped++;
            else if (!first_err)
                first_err = e; /* WSAEINPROGRESS, this thread's own */
            continue;
        }
        /* keep the call held until the lookup is registered, so that the
         * provider session cannot end before its part is known */
        GUID id = p->id;
        LPVOID arg = ps->arg;
        HANDLE h = NULL;
        host_unlock();
        /* each provider gets its own copy, freed when Begin returns: what
         * it does to it cannot reach the client or another provider */
        WSAQUERYSET2W *qs2 = NULL;
        size_t qs2_size = 0;
        e = copy_query_set2(lpqsRestrictions, &qs2, &qs2_size);
        if (!e) {
            int pin = prov_enter();
            if (pin == PIN_REFUSED) {
                e = WSASYSNOTREADY; /* as the provider's error */
            } else {
                WSASetLastError(0);
                INT r = p->fn.begin(&id, qs2, dwControlFlags, arg, &h);
                prov_leave(pin);
                e = r == NO_ERROR ? 0 : provider_error();
            }
            free(qs2);
        }
        host_lock();
        if (e) {
            dropped++;
            ps_call_release_L(ps, &t);
            continue;
        }
        ps->refs++; /* the part's reference */
        parts[nparts].ps = ps;
        parts[nparts].handle = h;
        nparts++;
    }
    session *s = idmap_get(&host_g.sessions, session_id);
    int ok = nparts > 0 && s != NULL;
    if (ok) {
        lk->id = fresh_id(&host_g.next_lookup, &host_g.lookups, 1);
        if (idmap_put(&host_g.lookups, lk->id, lk) != 0) {
            ok = 0;
            first_err = WSA_NOT_ENOUGH_MEMORY;
        }
    } else if (!s) {
        first_err = WSAEINVAL; /* the session was closed meanwhile */
    } else if (dropped) {
        /* routed providers, none of which began: as Winsock, whatever
         * their own errors were */
        first_err = WSASERVICE_NOT_FOUND;
    }
    lk->parts = parts;
    lk->nparts = nparts;
    nspv2_route_cursor_init(&lk->cursor, nparts, dwControlFlags);
    lk->refs = 1;
    for (size_t i = 0; i < nparts; i++) {
        psess *ps = parts[i].ps;
        /* a provider session asked to end meanwhile (unadvertised): end
         * its part now, before the held call is released */
        if (!ok || ps->end_kind != END_NONE)
            part_end_L(&parts[i], &t);
        ps_call_release_L(ps, &t);
    }
    if (ok) {
        lk->sess = s;
        lk->snext = s->lookups;
        if (s->lookups)
            s->lookups->sprev = lk;
        s->lookups = lk;
        *lphLookup = id_to_handle(lk->id);
    } else {
        lookup_unref_L(lk);
    }
    return route_done_L(&t, route, nroute, !ok, first_err);
}

NSPV2_HOST_API INT nspv2_session_start(uint64_t session_id, DWORD name_space,
                                      const GUID *provider_id)
{
    host_init();
    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    nspv2_catalog *cat = NULL;
    int err = nspv2_catalog_snapshot(&cat);
    if (err)
        return host_fail(err);
    host_lock();
    err = session_route_L(session_id, cat, name_space, provider_id, NULL, &route, &nroute);
    host_unlock();
    nspv2_catalog_release(cat);
    if (err)
        return host_fail(err);
    host_lock();
    int first_err = 0;
    size_t started = 0;
    for (size_t i = 0; i < nroute; i++) {
        psess *ps;
        int e = ps_acquire_L(session_id, route[i], &ps, &t, NULL);
        if (e) {
            if (!first_err)
                first_err = e;
            continue;
        }
        started++;
        ps_call_release_L(ps, &t);
    }
    return route_done_L(&t, route, nroute, !started, first_err);
}

NSPV2_HOST_API INT nspv2_lookup_next(HANDLE hLookup, DWORD dwControlFlags,
                                     LPDWORD lpdwBufferLength, LPWSAQUERYSETW lpqsResults)
{
    host_init();
    if (!lpdwBufferLength)
        return host_fail(WSAEFAULT);
    DWORD client_len = *lpdwBufferLength;
    if (client_len && !lpqsResults)
        return host_fail(WSAEFAULT);
    size_t scratch_size = client_len > NSPV2_QS_DELTA ? client_len - NSPV2_QS_DELTA : 0;

    todo t = {0};
    host_lock();
    lookup *lk = idmap_get(&host_g.lookups, handle_to_id(hLookup));
    if (!lk) {
        host_unlock();
        return host_fail(WSA_INVALID_HANDLE);
    }
    lk->refs++;
    while (lk->busy && !lk->ended)
        nspv2_cond_wait(&host_g.cv, &host_g.lock); /* one next at a time per lookup */
    if (lk->ended) {
        lookup_unref_L(lk);
        host_unlock();
        return host_fail(WSA_INVALID_HANDLE);
    }
    lk->busy = 1;

    int err = 0;
    async_call *done = NULL; /* a completed call to hand back */
    async_call *a = NULL;
    for (;;) {
        if (lk->ended) { /* ended by another thread meanwhile */
            err = WSA_E_CANCELLED;
            break;
        }
        nspv2_route_cursor *c = &lk->cursor;
        if (c->cur < c->n && lk->parts[c->cur].ended) {
            /* ended by WSAUnadvertiseProvider: as if it had reached its end */
            nspv2_route_step(c, WSA_E_NO_MORE);
            continue;
        }
        if (c->cur >= c->n) { /* the lookup is over */
            err = nspv2_route_final(c);
            if (!err)
                err = WSA_E_NO_MORE;
            break;
        }
        if (!a) { /* allocate without the lock (busy keeps the lookup ours) */
            host_unlock();
            a = async_alloc(scratch_size, 1);
            host_lock();
            if (!a) {
                err = WSA_NOT_ENOUGH_MEMORY;
                break;
            }
            continue; /* look at the parts again */
        }
        if (async_register_L(a) != 0) {
            err = WSA_NOT_ENOUGH_MEMORY;
            break;
        }
        size_t idx = c->cur;
        lookup_part *part = &lk->parts[idx];
        psess *ps = part->ps;
        ps_call_hold_L(ps);
        lk->pending = a;
        lk->pending_part = idx;
        HANDLE hprov = part->handle;
        NSPV2_SDK_LOOKUPSERVICENEXTEX next_ex = ps->prov->fn.next_ex;
        uint64_t deadline = deadline_after_L();
        a->len = (DWORD)scratch_size;
        a->provider_id = ps->prov->id; /* for releasing it held (unadvertise) */
        host_unlock();
        int pin = prov_enter();
        if (pin != PIN_REFUSED)
            next_ex(id_to_handle(a->id), hprov, dwControlFlags, &a->len,
                    (LPWSAQUERYSET2W)(void *)a->scratch);
        prov_leave(pin);
        host_lock();
        if (pin == PIN_REFUSED)
            async_complete_L(a, WSASYSNOTREADY); /* the host completes it itself */
        ps_call_release_L(ps, &t);
        int completed = async_wait_L(a, deadline, ps->prov); /* lk's part keeps ps */
        lk->pending = NULL;
        if (!completed) {
            a = NULL; /* stays in the table (EXPIRED) for a late completion */
            err = WSA_E_CANCELLED;
            break;
        }
        if (a->code != NO_ERROR && !guard_intact(a->scratch, a->scratch_size)) {
            /* an overrun is a fault whatever the provider completed with:
             * reported now, and the part is left (its error recorded) */
            host_g.provider_faults++;
            a->code = WSANO_RECOVERY;
            if (!lk->ended)
                nspv2_route_step(c, WSANO_RECOVERY);
            done = a;
            a = NULL;
            break;
        }
        if (lk->ended || nspv2_route_step(c, a->code) == NSPV2_STEP_RETURN) {
            done = a; /* a result, WSAEFAULT, a cancellation: the caller's */
            a = NULL;
            break;
        }
        async_free(a); /* the part's end or failure: on to the next part, or done */
        a = NULL;
    }
    lk->busy = 0;
    nspv2_cond_broadcast(&host_g.cv);
    lookup_unref_L(lk);
    host_unlock();
    async_free(a); /* allocated but unused */
    todo_run(&t);
    if (!done)
        return host_fail(err);

    INT code = done->code;
    if (code == NO_ERROR) {
        if (relocate_result(done->scratch, done->scratch_size, (unsigned char *)lpqsResults) != 0) {
            host_lock();
            host_g.provider_faults++;
            host_unlock();
            code = WSANO_RECOVERY;
        }
    } else if (code == WSAEFAULT) {
        DWORD need = done->len;
        *lpdwBufferLength = need > UINT32_MAX - NSPV2_QS_DELTA ? UINT32_MAX : need + NSPV2_QS_DELTA;
    }
    async_free(done);
    return code == NO_ERROR ? NO_ERROR : host_fail(code);
}

NSPV2_HOST_API INT nspv2_lookup_end(HANDLE hLookup)
{
    host_init();
    todo t = {0};
    host_lock();
    lookup *lk = idmap_remove(&host_g.lookups, handle_to_id(hLookup));
    if (!lk) {
        host_unlock();
        return host_fail(WSA_INVALID_HANDLE);
    }
    lookup_end_L(lk, &t);
    host_unlock();
    int err = todo_run(&t);
    return err ? host_fail(err) : NO_ERROR;
}

NSPV2_HOST_API INT nspv2_set_service(uint64_t session_id, LPWSAQUERYSETW lpqsRegInfo,
                                     WSAESETSERVICEOP essOperation, DWORD dwControlFlags)
{
    host_init();
    int err = check_query_set(lpqsRegInfo);
    if (err)
        return host_fail(err);
    if ((unsigned)essOperation > (unsigned)RNRSERVICE_DELETE)
        return host_fail(WSAEINVAL);
    todo t = {0};
    provider **route = NULL;
    size_t nroute = 0;
    nspv2_catalog *cat = NULL;
    if ((err = nspv2_catalog_snapshot(&cat)) != 0)
        return host_fail(err);
    host_lock();
    err = session_route_L(session_id, cat, lpqsRegInfo->dwNameSpace,
                          lpqsRegInfo->lpNSProviderId, lpqsRegInfo->lpszServiceInstanceName,
                          &route, &nroute);
    if (!err && !lpqsRegInfo->lpNSProviderId && lpqsRegInfo->dwNameSpace != NS_ALL) {
        /* a specific namespace: the first provider of the route only (the
         * name's primary provider when there is one) */
        while (nroute > 1)
            provider_unref_L(route[--nroute]);
    }
    host_unlock();
    nspv2_catalog_release(cat);
    if (err)
        return host_fail(err);
    host_lock();
    int first_err = 0;
    for (size_t i = 0; i < nroute; i++) {
        provider *p = route[i];
        int e = 0;
        psess *ps = NULL;
        if (!p->fn.set_service_ex)
            e = WSAEOPNOTSUPP;
        else
            e = ps_acquire_L(session_id, p, &ps, &t, NULL);
        async_call *a = NULL;
        if (!e) {
            /* the provider's own copy of the registration, kept with the
             * call until it completes (or its held record is released) */
            if (!(a = async_alloc(0, 0)))
                e = WSA_NOT_ENOUGH_MEMORY;
            else if (!(e = copy_query_set2(lpqsRegInfo, &a->qs, &a->qs_size)) &&
                     async_register_L(a) != 0)
                e = WSA_NOT_ENOUGH_MEMORY;
            if (e) {
                async_free(a);
                ps_call_release_L(ps, &t);
            }
        }
        if (e) {
            if (!first_err)
                first_err = e;
            continue;
        }
        a->provider_id = p->id;
        LPVOID arg = ps->arg;
        uint64_t deadline = deadline_after_L();
        host_unlock();
        int pin = prov_enter();
        if (pin != PIN_REFUSED)
            p->fn.set_service_ex(id_to_handle(a->id), &a->provider_id, a->qs, essOperation,
                                 dwControlFlags, arg);
        prov_leave(pin);
        host_lock();
        if (pin == PIN_REFUSED)
            async_complete_L(a, WSASYSNOTREADY); /* the host completes it itself */
        ps_call_release_L(ps, &t);
        if (async_wait_L(a, deadline, p)) { /* the route keeps p */
            e = a->code;
            async_free(a);
        } else {
            e = WSA_E_CANCELLED; /* a stays in the table (EXPIRED) */
        }
        if (e && !first_err)
            first_err = e;
    }
    return route_done_L(&t, route, nroute, first_err != 0, first_err);
}

/* ------------------------------------------------------------------------ */
/* Winsock-named client calls, in the thread's current session              */

NSPV2_HOST_API INT WSAAPI WSALookupServiceBeginW(LPWSAQUERYSETW lpqsRestrictions,
                                                 DWORD dwControlFlags, LPHANDLE lphLookup)
{
    uint64_t s = current_session();
    if (!s)
        return host_fail(WSANOTINITIALISED);
    return nspv2_lookup_begin(s, lpqsRestrictions, dwControlFlags, lphLookup);
}

NSPV2_HOST_API INT WSAAPI WSALookupServiceNextW(HANDLE hLookup, DWORD dwControlFlags,
                                                LPDWORD lpdwBufferLength,
                                                LPWSAQUERYSETW lpqsResults)
{
    if (!current_session())
        return host_fail(WSANOTINITIALISED);
    return nspv2_lookup_next(hLookup, dwControlFlags, lpdwBufferLength, lpqsResults);
}

NSPV2_HOST_API INT WSAAPI WSALookupServiceEnd(HANDLE hLookup)
{
    if (!current_session())
        return host_fail(WSANOTINITIALISED);
    return nspv2_lookup_end(hLookup);
}

NSPV2_HOST_API INT WSAAPI WSASetServiceW(LPWSAQUERYSETW lpqsRegInfo,
                                         WSAESETSERVICEOP essoperation, DWORD dwControlFlags)
{
    uint64_t s = current_session();
    if (!s)
        return host_fail(WSANOTINITIALISED);
    return nspv2_set_service(s, lpqsRegInfo, essoperation, dwControlFlags);
}
