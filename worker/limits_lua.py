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
-- The learned margin: the share of qps the pacing aims at, `start` until a 403 first lowers
-- it. Each 403 taken for timing jitter lowers it by a step (down to `least`); it regains
-- `regain` per second without one (up to `most`).
local function margin_now(start, most, least, regain, margin, margin_at, now)
  if not margin or not margin_at then return start end
  local elapsed = now - tonumber(margin_at)
  if elapsed < 0 then elapsed = 0 end
  local m = tonumber(margin) + regain * elapsed / 1000000
  if m > most then m = most end
  if m < least then m = least end
  return m
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS[1] state hash; ARGV: qps, increase/s, burst, max_wait_us, ttl_ms, recover_fraction,
# margin start, most, least, regain/s (the rate aims at qps x the learned margin), warm start
# (a fresh schedule begins as if just cut to this share of its rate; 1: at the full rate).
# ARGV[12], count: permits wanted (1 when absent). Books the next permit if it is at most
# max_wait_us away, and after it up to count - 1 more, one interval apart, as long as each is
# within max_wait_us: {1, wait_us, slot_us, permits booked, interval_us}. Otherwise takes
# nothing: {0, us until a slot within max_wait_us may exist, 0, 0, interval_us}.
# Microsecond values stay below 2^53, exact in Lua's doubles; written with %.0f because
# tostring() would round them to 14 digits.
ACQUIRE_LUA = (
    EFFECTIVERATE_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'tat', 'cut_rate', 'cut_at', 'margin', 'margin_at')
local qps = tonumber(ARGV[1]) * margin_now(tonumber(ARGV[7]), tonumber(ARGV[8]),
                                           tonumber(ARGV[9]), tonumber(ARGV[10]), state[4],
                                           state[5], now)
local rate = effective_rate(qps, tonumber(ARGV[2]), tonumber(ARGV[6]), state[2], state[3], now)
local warm = tonumber(ARGV[11])
if not state[1] and warm < 1 then
  -- A fresh schedule (the first permit, or the first after an idle TTL): start as if just cut
  -- to `warm` of the rate, and recover from there like after any cut.
  rate = rate * warm
  redis.call('HSET', KEYS[1], 'cut_rate', string.format('%.6f', rate), 'cut_at',
             string.format('%.0f', now))
end
local interval = math.ceil(1000000 / rate)
local tau = math.floor((tonumber(ARGV[3]) - 1) * interval)
local tat = tonumber(state[1]) or now
if tat < now then tat = now end
local wait = tat - tau - now
local max_wait = tonumber(ARGV[4])
if wait > max_wait then return {0, wait - max_wait, 0, 0, interval} end
if wait < 0 then wait = 0 end
-- Several permits in one run: the i-th at slot + i * interval, where i runs of one permit
-- would have put them (with a burst above 1, no earlier), none beyond max_wait (so a cut
-- still acts within it).
local count = math.max(1, math.floor(tonumber(ARGV[12]) or 1))
local n = math.min(count, math.floor((max_wait - wait) / interval) + 1)
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', tat + n * interval))
if not state[4] then -- the margin's clock starts with the first permit: it regains from here
  redis.call('HSET', KEYS[1], 'margin', ARGV[7], 'margin_at', string.format('%.0f', now))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, wait, now + wait, n, interval}
"""
)

# KEYS[1], KEYS[2] (the late calls, worker.late_calls; optional); ARGV: qps, increase/s,
# factor, min_qps, window_us, ttl_ms, recover_fraction, near_cap_factor, margin start, most,
# least, regain/s, step, the refused call's slot (µs; 0: not known), forgive (µs; 0: never).
# Cuts the shared rate unless it was cut (or the margin lowered) less than window_us ago:
# {1 cut / 2 margin lowered only / 0 nothing, the rate now in force as a string}; 3 and 4 are
# 2 and a gentle cut for a 403 our own late call explains, which never halves; 5 a lone 403
# forgiven (nothing changed: the first in `forgive` µs at the full rate). With a
# learned margin (step > 0), near the ceiling a 403 widens the margin (and cuts gently when
# another did within 5 s); below it, when a volley's 403s reach a tenth of a second's permits
# (ten at least), or on a third mild reaction in a row (each within 3 s of the last), it cuts
# by `factor`.
THROTTLED_LUA = (
    EFFECTIVERATE_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'cut_rate', 'cut_at', 'margin', 'margin_at', 'mild',
                         'strikes', 'lowered_at', 'forgiven_at')
local margin = margin_now(tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]),
                          tonumber(ARGV[12]), state[3], state[4], now)
local qps = tonumber(ARGV[1]) * margin
local rate = effective_rate(qps, tonumber(ARGV[2]), tonumber(ARGV[7]), state[1], state[2], now)
local step = tonumber(ARGV[13])
local learn = step > 0
local function cut_to(factor, mild)
  local cut = rate * factor
  if cut < tonumber(ARGV[4]) then cut = tonumber(ARGV[4]) end
  if cut > rate then cut = rate end
  redis.call('HSET', KEYS[1], 'cut_rate', string.format('%.6f', cut), 'cut_at',
             string.format('%.0f', now), 'volley', 1, 'mild', mild)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {1, string.format('%.6f', cut)}
end
local function since(at) if at then return now - tonumber(at) end return nil end
local function quiet(at) local s = since(at) return not s or s > 5000000 end
local function within(at, us) local s = since(at) return s ~= nil and s >= 0 and s < us end
-- The refused call's slot is ARGV[14] (0: not known). A call of ours that left late
-- (worker.late_calls, KEYS[2]), booked a second or more before it but gone out less than a
-- second before it, still held its place in the service's window: this 403 is our timing.
-- One late call explains one refusal: it is taken.
local function explained(refused)
  if not refused or refused <= 0 or not KEYS[2] then return false end
  local found = redis.call('ZRANGEBYSCORE', KEYS[2], string.format('(%.0f', refused - 1000000),
                           string.format('%.0f', refused + 50000))
  for _, slot in ipairs(found) do
    if tonumber(slot) <= refused - 995000 then
      redis.call('ZREM', KEYS[2], slot)
      return true
    end
  end
  return false
end
local ours = learn and explained(tonumber(ARGV[14]))
for _, at in ipairs({state[2], state[7]}) do -- a volley of 403s is one signal
  if within(at, tonumber(ARGV[5])) then
    if ours then return {0, string.format('%.6f', rate)} end -- never part of a dense volley
    -- The same volley. Jitter makes a few 403s; a tenth of a second's permits (ten at least)
    -- after a mild reaction is a service that now allows less than we send: cut fully at
    -- once. Relative to the rate: a 20 ms stall at 1,000/s bunches twenty calls, jitter still.
    -- At or past it (the rate, and so `dense`, may grow within the volley); the cut clears
    -- 'mild', so it happens once.
    local dense = math.max(10, math.floor(rate / 10))
    if learn and redis.call('HINCRBY', KEYS[1], 'volley', 1) >= dense and state[5] == '1' then
      return cut_to(tonumber(ARGV[3]), 0)
    end
    return {0, string.format('%.6f', rate)}
  end
end
local near = rate >= qps * 0.95
-- A lone 403 at the full rate (none forgiven, no step taken, in the `forgive` seconds before
-- it) is forgiven: a step would cost ten times the call it lost (worker.limits_margin). It
-- opens no volley, so the next 403, even in the same burst, takes the step as before.
local forgive = tonumber(ARGV[15]) or 0
if learn and near and forgive > 0 and not within(state[7], forgive)
    and not within(state[8], forgive) then
  redis.call('HSET', KEYS[1], 'forgiven_at', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {5, string.format('%.6f', rate)}
end
if learn then
  -- Within 15 % of the ceiling (a gentle cut leaves 10 % off) a lone 403 is still jitter;
  -- a real lower cap shows as a dense volley (above) or as 403s further down.
  -- Our own late call (`ours`) explains it whatever the rate: that rule, strikes and volleys
  -- are for a lower cap; the mild reaction below (margin, gentle cut) still applies.
  if rate < qps * 0.85 and not ours then return cut_to(tonumber(ARGV[3]), 0) end
  -- Jitter at the full rate: the pacing aimed too close to the cap. Learn a wider margin;
  -- the first such 403 in 5 s does only that, a later one also cuts the rate gently.
  -- Three mild reactions each within 3 s of the last did not stop the 403s: a lower cap.
  -- The third counts only while the gentle cut still holds the rate 3 % or more under the
  -- ceiling (it recovers in about a second): a 403 after that is jitter at the full rate
  -- again. On a loaded host lone 403s 2-3 s apart otherwise added up to a halving; a cap
  -- within 3 % of the ceiling is the margin's to learn.
  local lowered = math.max(tonumber(ARGV[11]), margin - step)
  local first = lowered < margin and quiet(state[7])
  local strikes = 1
  if within(state[7], 3000000) then
    strikes = (tonumber(state[6]) or 0) + 1
    if strikes >= 3 and rate >= qps * 0.97 then strikes = 2 end
  end
  if ours then strikes = math.min(strikes - 1, 2) end
  if strikes >= 3 then
    redis.call('HSET', KEYS[1], 'strikes', 0)
    return cut_to(tonumber(ARGV[3]), 0)
  end
  redis.call('HSET', KEYS[1], 'margin', string.format('%.6f', lowered), 'margin_at',
             string.format('%.0f', now), 'lowered_at', string.format('%.0f', now), 'volley', 1,
             'mild', 1, 'strikes', strikes)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  if first then return {ours and 3 or 2, string.format('%.6f', rate * lowered / margin)} end
  local cut = cut_to(tonumber(ARGV[8]), 1)
  if ours then cut[1] = 4 end
  return cut
end
-- A fixed margin: a 403 at (nearly) the full rate after 5 s without one is most likely
-- jitter bunching a few calls into one second: a gentle cut. A 403 soon after another finds
-- a real, lower cap: the full cut (else gentle cuts and quick recovery would never descend).
if quiet(state[2]) and near then return cut_to(tonumber(ARGV[8]), 1) end
return cut_to(tonumber(ARGV[3]), 0)
"""
)

# KEYS[1]; ARGV: qps, increase/s, recover_fraction, margin start, most, least, regain/s.
# {the rate in force now, the margin now}, as strings.
RATE_LUA = (
    EFFECTIVERATE_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'cut_rate', 'cut_at', 'margin', 'margin_at')
local m = margin_now(tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
                     state[3], state[4], now)
return {string.format('%.6f', effective_rate(tonumber(ARGV[1]) * m, tonumber(ARGV[2]),
                                             tonumber(ARGV[3]), state[1], state[2], now)),
        string.format('%.6f', m)}
"""
)
