"""The Lua scripts: one atomic check-and-consume per request, one settle after it, and
``BATCH``, which runs many of either in one call (the same function bodies, in order).

They mirror ``gcra.py`` and ``backend.decide`` expression for expression (Lua numbers are the
same IEEE doubles as Python floats), and return the whole decision as eight integers so the
client parses little. Time is Redis's own ``TIME`` — one clock for every replica — unless the
caller passes ``now`` (tests). An account's three TATs live in one hash and its concurrency
slots in one sorted set, both under the hash tag ``{account}`` so the scripts work on Redis
Cluster. Keys outlive their state by a minute: stale state is harmless.
"""

PRELUDE = """
local clock
local function time_of(arg)
  if arg ~= '' then return tonumber(arg) end
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return clock
end
local MINUTE, DAY, GRACE_MS = 60000000, 86400000000, 60000
local function increment(cost, period, limit)
  if limit <= 0 then return period + 1 end
  return math.ceil(cost * period / limit)
end
local function keep_until(key, tat, now)
  redis.call('PEXPIRE', key, math.ceil(math.max(tat - now, 0) / 1000) + GRACE_MS)
end
"""

ADMIT_FN = """
-- lim: limits hash (fields r, m, d: TATs), concurrency slots (zset)
-- a: now|'', rpm, tpm, tpd, max_concurrent, cost, slot, lease_us
-- returns: allowed, rejected_by (0 none, 1 requests, 2 tokens/minute, 3 tokens/day,
--          4 concurrency), retry_after, should_retry, requests remaining, requests reset,
--          tokens remaining, tokens reset
local function admit(lim, conc, a)
  local now = time_of(a[1])
  local cost, lease = math.max(tonumber(a[6]), 0), tonumber(a[8])
  local rpm, tpm, tpd = tonumber(a[2]), tonumber(a[3]), tonumber(a[4])
  local state = redis.call('HMGET', lim, 'r', 'm', 'd')
  local function check(stored, c, period, limit)
    local s = tonumber(stored)
    local tat = now
    if s and s >= now then tat = s end
    local inc = increment(c, period, limit)
    local new_tat = tat + inc
    local retry = 0
    if new_tat - period > now then retry = new_tat - period - now end
    return tat, new_tat, retry, inc <= period
  end
  local function remaining(tat, period, limit)
    local used = math.max(tat - now, 0)
    return math.max(math.floor((period - used) * math.max(limit, 0) / period), 0)
  end
  local r_tat, r_new, r_retry = check(state[1], 1, MINUTE, rpm)
  local m_tat, m_new, m_retry, m_fits = check(state[2], cost, MINUTE, tpm)
  local d_tat, d_new, d_retry, d_fits = check(state[3], cost, DAY, tpd)
  redis.call('ZREMRANGEBYSCORE', conc, '-inf', now)
  local over = redis.call('ZCARD', conc) >= tonumber(a[5])
  local allowed, rejected_by = 1, 0
  if over then rejected_by = 4
  elseif r_retry > 0 then rejected_by = 1
  elseif m_retry > 0 then rejected_by = 2
  elseif d_retry > 0 then rejected_by = 3 end
  local retry = 0
  if rejected_by > 0 then
    allowed = 0
    retry = math.max(r_retry, m_retry, d_retry)
    if over then retry = math.max(retry, 1000000) end
  else
    r_tat, m_tat, d_tat = r_new, m_new, d_new
    redis.call('HSET', lim, 'r', r_new, 'm', m_new, 'd', d_new)
    keep_until(lim, math.max(r_new, m_new, d_new), now)
    redis.call('ZADD', conc, now + lease, a[7])
    keep_until(conc, now + lease, now)
  end
  local should_retry = 0
  if m_fits and d_fits then should_retry = 1 end
  return {allowed, rejected_by, retry, should_retry,
          remaining(r_tat, MINUTE, rpm), math.max(r_tat - now, 0),
          remaining(m_tat, MINUTE, tpm), math.max(m_tat - now, 0)}
end
"""

SETTLE_FN = """
-- lim: limits hash, concurrency slots (zset)
-- a: now|'', tpm, tpd, delta (used - reserved), slot
local function settle(lim, conc, a)
  local now = time_of(a[1])
  redis.call('ZREM', conc, a[5])
  local delta = tonumber(a[4])
  if delta == 0 then return 0 end
  local state = redis.call('HMGET', lim, 'r', 'm', 'd')
  local function adjust(stored, period, limit)
    local tat = tonumber(stored) or now
    local step = increment(math.abs(delta), period, limit)
    if delta > 0 then return math.max(tat, now) + step end
    return math.max(tat - step, now)
  end
  local m = adjust(state[2], MINUTE, tonumber(a[2]))
  local d = adjust(state[3], DAY, tonumber(a[3]))
  redis.call('HSET', lim, 'm', m, 'd', d)
  keep_until(lim, math.max(tonumber(state[1]) or now, m, d), now)
  return 1
end
"""

ADMIT = PRELUDE + ADMIT_FN + "return admit(KEYS[1], KEYS[2], ARGV)\n"
SETTLE = PRELUDE + SETTLE_FN + "return settle(KEYS[1], KEYS[2], ARGV)\n"

ADMIT_ARGS, SETTLE_ARGS = 8, 5
BATCH = PRELUDE + ADMIT_FN + SETTLE_FN + f"""
-- Many calls in one round trip, in order: ARGV is, per call, 'a' and the 8 arguments of an
-- admission or 's' and the 5 of a settlement; KEYS two per call. Returns each call's reply.
local out, k, i = {{}}, 1, 1
while i <= #ARGV do
  local kind, n = ARGV[i], {SETTLE_ARGS}
  if kind == 'a' then n = {ADMIT_ARGS} end
  local a = {{unpack(ARGV, i + 1, i + n)}}
  if kind == 'a' then out[#out + 1] = admit(KEYS[k], KEYS[k + 1], a)
  else out[#out + 1] = settle(KEYS[k], KEYS[k + 1], a) end
  k, i = k + 2, i + 1 + n
end
return out
"""
