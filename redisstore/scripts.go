package redisstore

import "github.com/redis/go-redis/v9"

// The scripts keep an account's state in two keys that share a hash tag,
// so that they work on Redis Cluster: a hash (blocks, budgets, learned
// limit) and a sorted set of leases scored by when they expire. Times are
// the server's, in milliseconds, so that every replica uses one clock;
// times passed in and returned are relative to it. Numbers that are not
// integers are stored with string.format, since Redis turns Lua numbers
// it returns into integers and prints them with too few digits.
//
// The RPM budget is GCRA, as github.com/go-redis/redis_rate computes it
// (itself after github.com/rwz/redis-gcra): a request is allowed when
// the theoretical arrival time, pushed one interval on by each request,
// stays within a minute's burst of now. It is written here into the same
// script as the slot and the TPM budget, so that one round trip takes all
// of them or none: redis_rate's own script would cost a round trip of its
// own and could not be undone when the slot is refused.

// takeScript claims a slot and budgets.
//
// Replicas that want slots of a full account get a fair share of them: a
// replica refused for want of slots says so (the wanters set, scored by
// when), and while others want too, a replica that holds its share of
// the limit already gets no more. Without that, the replica that
// releases a slot would take it again before the others hear of it.
//
//	KEYS: state, leases, wanters
//	ARGV: lease, lease ms, limit, rpm, tpm, tokens, key block field, replica
//	returns: {refusal, ms until it lifts, in flight, learned limit}
var takeScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, ttl = ARGV[1], tonumber(ARGV[2])
local limit, rpm, tpm, cost = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local h = redis.call('HMGET', KEYS[1], 'off', ARGV[7], 'cool', 'limit', 'tat', 'tpm', 'tpm_at')
local off, keyoff, cool = tonumber(h[1] or 0), tonumber(h[2] or 0), tonumber(h[3] or 0)
local learned = tonumber(h[4] or 0)
if off > now then return {4, off - now, 0, learned} end
if keyoff > now then return {5, keyoff - now, 0, learned} end
if cool > now then return {3, cool - now, 0, learned} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local inflight = redis.call('ZCARD', KEYS[2])
if redis.call('ZSCORE', KEYS[2], lease) then return {0, 0, inflight, learned} end
if limit > 0 then
  local replica = ARGV[8]
  if inflight >= limit then
    redis.call('ZADD', KEYS[3], now, replica)
    redis.call('PEXPIRE', KEYS[3], 2000)
    return {1, 0, inflight, learned}
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 1000)
  local wanting = redis.call('ZRANGE', KEYS[3], 0, -1)
  local others = 0
  for _, w in ipairs(wanting) do if w ~= replica then others = others + 1 end end
  if others > 0 then
    local mine = 0
    for _, l in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
      if string.sub(l, 1, #replica + 1) == replica .. '-' then mine = mine + 1 end
    end
    -- The share is of the limit the replicas agree on, when one was
    -- learned: a replica probing above it may take a slot past it, but
    -- must not get a larger share of the rest for it.
    local agreed = limit
    if learned > 0 and learned < limit then agreed = learned end
    if mine >= math.ceil(agreed / (others + 1)) then
      redis.call('ZADD', KEYS[3], now, replica)
      return {1, 0, inflight, learned}
    end
  end
  redis.call('ZREM', KEYS[3], replica)
end
local tat = 0
if rpm > 0 then
  tat = math.max(tonumber(h[5] or 0), now) + 60000 / rpm
  local allowed = tat - 60000
  if allowed > now then return {2, math.ceil(allowed - now), inflight, learned} end
end
local left = 0
if tpm > 0 then
  local at = tonumber(h[7] or now)
  local have = math.min(tpm, tonumber(h[6] or tpm) + math.max(now - at, 0) * tpm / 60000)
  local need = math.min(cost, tpm)
  if have < need then return {2, math.ceil((need - have) * 60000 / tpm), inflight, learned} end
  left = have - need
end
redis.call('ZADD', KEYS[2], now + ttl, lease)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
if rpm > 0 then redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat)) end
if tpm > 0 then
  redis.call('HSET', KEYS[1], 'tpm', string.format('%.3f', left), 'tpm_at', now, 'tpm_rate', tpm)
end
return {0, 0, inflight + 1, learned}
`)

// releaseScript gives a slot back, corrects the TPM budget and wakes the
// replicas waiting on the account.
//
//	KEYS: state, leases
//	ARGV: lease, refund, channel, account
//	returns: the slots still held
var releaseScript = redis.NewScript(`
local removed = redis.call('ZREM', KEYS[2], ARGV[1])
local refund = tonumber(ARGV[2])
if refund ~= 0 then
  local h = redis.call('HMGET', KEYS[1], 'tpm', 'tpm_at', 'tpm_rate')
  local rate = tonumber(h[3] or 0)
  if rate > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local at = tonumber(h[2] or now)
    local have = math.min(rate, tonumber(h[1] or rate) + math.max(now - at, 0) * rate / 60000 + refund)
    redis.call('HSET', KEYS[1], 'tpm', string.format('%.3f', have), 'tpm_at', now)
  end
end
if removed == 1 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return redis.call('ZCARD', KEYS[2])
`)

// renewScript keeps leases alive for another lease time.
//
//	KEYS: leases
//	ARGV: lease ms, leases...
var renewScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return 1
`)

// blockScript records a block until a time, keeping a later one.
//
//	KEYS: state
//	ARGV: field, ms from now
var blockScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local upto = now + tonumber(ARGV[2])
local was = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or 0)
if upto > was then redis.call('HSET', KEYS[1], ARGV[1], upto) end
return 1
`)
