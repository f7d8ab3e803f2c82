"""The limiter's Lua scripts, run inside Redis (one round trip per permit).

Kept apart from :mod:`worker.limits`, whose docstring proves what they guarantee; each script is
the whole decision for one call (``EVALSHA``), so no two workers ever interleave inside one.
"""

# Shared by the scripts: the rate in force at `now`, given the configured qps, the additive
# increase per second and the last cut (rate right after it, server microseconds of it).
EFFECTIVERATE_LUA = """
local function effective_rate(qps, inc, frac, cut_rate, cut_at, now)
  if not cut_rate or not cut_at then return qps end
  local elapsed = now - tonumber(cut_at)
  if elapsed < 0 then elapsed = 0 end -- server clock stepped back (failover): no recovery yet
  -- Additive increase, at most `frac` of the rate the cut left per second: a cap far below
  -- the configured qps is approached gently, not overshot every second. frac <= 0: no bound.
  local step = inc
  if frac > 0 then step = math.min(inc, tonumber(cut_rate) * frac) end
  local rate = tonumber(cut_rate) + step * elapsed / 1000000
  if rate > qps then rate = qps end
  return rate
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS[1] state hash; ARGV: qps, increase/s, burst, max_wait_us, ttl_ms.
# Books the next permit if it is at most max_wait_us away: {1, wait_us, slot_us}.
# Otherwise takes nothing: {0, us until a slot within max_wait_us may exist, 0}.
# Microsecond values stay below 2^53, exact in Lua's doubles; written with %.0f because
# tostring() would round them to 14 digits.
ACQUIRE_LUA = (
    EFFECTIVERATE_LUA
    + """
local qps = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tat', 'cut_rate', 'cut_at')
local rate = effective_rate(qps, tonumber(ARGV[2]), tonumber(ARGV[6]), state[2], state[3], now)
local interval = math.ceil(1000000 / rate)
local tau = math.floor((tonumber(ARGV[3]) - 1) * interval)
local tat = tonumber(state[1]) or now
if tat < now then tat = now end
local wait = tat - tau - now
local max_wait = tonumber(ARGV[4])
if wait > max_wait then return {0, wait - max_wait, 0} end
if wait < 0 then wait = 0 end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat + interval))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, wait, now + wait}
"""
)

# KEYS[1]; ARGV: qps, increase/s, factor, min_qps, window_us, ttl_ms, recover_fraction,
# near_cap_factor.
# Cuts the shared rate unless it was cut less than window_us ago: {cut?, rate as string}.
THROTTLED_LUA = (
    EFFECTIVERATE_LUA
    + """
local qps = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'cut_rate', 'cut_at')
local rate = effective_rate(qps, tonumber(ARGV[2]), tonumber(ARGV[7]), state[1], state[2], now)
if state[2] then
  local since = now - tonumber(state[2])
  if since >= 0 and since < tonumber(ARGV[5]) then
    return {0, string.format('%.6f', rate)}
  end
end
-- A 403 at (nearly) the full rate after 5 s without one is most likely jitter bunching a few
-- calls into one second: a gentle cut. A 403 soon after another finds a real, lower cap: the
-- full cut (else gentle cuts and quick recovery near the cap would never descend).
local factor = tonumber(ARGV[3])
local calm = not state[2] or now - tonumber(state[2]) > 5000000
if calm and rate >= qps * 0.95 then factor = math.max(factor, tonumber(ARGV[8])) end
local cut = rate * factor
if cut < tonumber(ARGV[4]) then cut = tonumber(ARGV[4]) end
if cut > rate then cut = rate end
redis.call('HSET', KEYS[1], 'cut_rate', string.format('%.6f', cut), 'cut_at',
           string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, string.format('%.6f', cut)}
"""
)

# KEYS[1]; ARGV: qps, increase/s. The rate in force now, as a string.
RATE_LUA = (
    EFFECTIVERATE_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'cut_rate', 'cut_at')
return string.format('%.6f', effective_rate(tonumber(ARGV[1]), tonumber(ARGV[2]),
                                            tonumber(ARGV[3]), state[1], state[2], now))
"""
)
