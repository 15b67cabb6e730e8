"""The Lua scripts: one atomic check-and-consume per request, one settle after it.

They mirror ``gcra.py`` and ``InProcessBackend`` expression for expression (Lua numbers are the
same IEEE doubles as Python floats). Time is Redis's own ``TIME`` — one clock for every replica —
unless the caller passes ``now`` (tests). All of an account's keys share one hash tag, so the
script works on Redis Cluster. Keys outlive their state by a minute: stale state is harmless.
"""

PRELUDE = """
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local MINUTE, DAY, GRACE_MS = 60000000, 86400000000, 60000
local function increment(cost, period, limit)
  if limit <= 0 then return period + 1 end
  return math.ceil(cost * period / limit)
end
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, tat, 'PX', math.ceil((tat - now) / 1000) + GRACE_MS)
  else
    redis.call('DEL', key)
  end
end
"""

ADMIT = PRELUDE + """
-- KEYS: requests TAT, tokens/minute TAT, tokens/day TAT, concurrency slots (zset)
-- ARGV: now|'', rpm, tpm, tpd, max_concurrent, cost, slot, lease_us
local cost, lease = tonumber(ARGV[6]), tonumber(ARGV[8])
local function check(key, c, period, limit)
  local stored = tonumber(redis.call('GET', key))
  local tat = now
  if stored and stored >= now then tat = stored end
  local inc = increment(c, period, limit)
  local new_tat = tat + inc
  local allow_at = new_tat - period
  local fits = 0
  if inc <= period then fits = 1 end
  if allow_at > now then return {0, tat, new_tat, allow_at - now, fits} end
  return {1, tat, new_tat, 0, fits}
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local over = 0
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[5]) then over = 1 end
local r = check(KEYS[1], 1, MINUTE, tonumber(ARGV[2]))
local m = check(KEYS[2], cost, MINUTE, tonumber(ARGV[3]))
local d = check(KEYS[3], cost, DAY, tonumber(ARGV[4]))
local allowed = 0
if over == 0 and r[1] == 1 and m[1] == 1 and d[1] == 1 then
  allowed = 1
  store(KEYS[1], r[3])
  store(KEYS[2], m[3])
  store(KEYS[3], d[3])
  redis.call('ZADD', KEYS[4], now + lease, ARGV[7])
  redis.call('PEXPIRE', KEYS[4], math.ceil(lease / 1000) + GRACE_MS)
end
return {allowed, over, now, r[1], r[2], r[3], r[4], r[5], m[1], m[2], m[3], m[4], m[5],
        d[1], d[2], d[3], d[4], d[5]}
"""

SETTLE = PRELUDE + """
-- KEYS: tokens/minute TAT, tokens/day TAT, concurrency slots (zset)
-- ARGV: now|'', tpm, tpd, delta (used - reserved), slot
redis.call('ZREM', KEYS[3], ARGV[5])
local delta = tonumber(ARGV[4])
if delta == 0 then return 0 end
local function adjust(key, period, limit)
  local tat = tonumber(redis.call('GET', key)) or now
  local step = increment(math.abs(delta), period, limit)
  if delta > 0 then
    tat = math.max(tat, now) + step
  else
    tat = math.max(tat - step, now)
  end
  store(key, tat)
end
adjust(KEYS[1], MINUTE, tonumber(ARGV[2]))
adjust(KEYS[2], DAY, tonumber(ARGV[3]))
return 1
"""
