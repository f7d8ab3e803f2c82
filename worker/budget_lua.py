"""The budget's Lua scripts, run inside Redis: one round trip reserves a call or refuses it.

Kept apart from :mod:`worker.budget`, whose docstring says what they guarantee. Each script is
the whole decision for one call (``EVALSHA``), so no two workers interleave inside one: with
hundreds of threads on several hosts, a counter never passes its cap.
"""

# KEYS[1] the daily counters' prefix (the UTC day number is appended), KEYS[2] the job's
# counter; ARGV: daily cap (0: none), job cap (0: none), daily ttl s, job ttl s.
# Returns {verdict, day, used_daily, used_job}; verdict 1 reserved, 0 the daily budget is used
# up, 2 the job's is, -1 the day's counter is missing (seed it), -2 the job's is (seed it).
# The day is the Redis server's (seconds // 86400): hosts whose clocks disagree still share one.
RESERVE_LUA = """
local t = redis.call('TIME')
local day = math.floor(tonumber(t[1]) / 86400)
local dkey = KEYS[1] .. day
local dcap = tonumber(ARGV[1])
local jcap = tonumber(ARGV[2])
local used_d = 0
local used_j = 0
if dcap > 0 then
  local v = redis.call('GET', dkey)
  if not v then return {-1, day, 0, 0} end
  used_d = tonumber(v)
end
if jcap > 0 then
  local v = redis.call('GET', KEYS[2])
  if not v then return {-2, day, used_d, 0} end
  used_j = tonumber(v)
end
if dcap > 0 and used_d >= dcap then return {0, day, used_d, used_j} end
if jcap > 0 and used_j >= jcap then return {2, day, used_d, used_j} end
if dcap > 0 then
  used_d = redis.call('INCR', dkey)
  redis.call('EXPIRE', dkey, ARGV[3])
end
if jcap > 0 then
  used_j = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return {1, day, used_d, used_j}
"""

# KEYS[1] a counter; ARGV: the value recorded in SQL, ttl s. Sets it only if it is missing
# (another worker may have seeded it, and reserved since): returns the counter's value.
SEED_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
return tonumber(redis.call('GET', KEYS[1]))
"""

# KEYS: the counters a reservation took a unit from. Gives the unit back (never below 0, never
# creating a counter that has expired or was lost meanwhile).
RELEASE_LUA = """
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v and tonumber(v) > 0 then redis.call('DECR', key) end
end
return 1
"""
