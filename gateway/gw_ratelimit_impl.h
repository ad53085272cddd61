/*
 * gw_ratelimit internals shared with tests: the Lua scripts, so a test can run them against a
 * real Redis in orders the async client cannot produce (a release before its admission).
 * KEYS and ARGV are described above each script in gw_ratelimit.c.
 */
#ifndef GW_RATELIMIT_IMPL_H
#define GW_RATELIMIT_IMPL_H

extern const char GW_RL_ADMIT_LUA[];
extern const char GW_RL_RELEASE_LUA[];

#endif /* GW_RATELIMIT_IMPL_H */
