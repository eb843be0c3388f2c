-- POST /api/auth/refresh, each request with a refresh token never used before.
--
-- A refresh token works once: the gateway answers with a new pair and the old
-- token is spent (reusing it would end the whole session). So the harness
-- opens a pool of sessions up front and writes their refresh tokens to a file,
-- one a line; this script gives each wrk thread its own slice of that file and
-- walks it, one token per request. The new tokens in the responses are not
-- picked up: every request costs the service one fresh rotation.
--
-- Arguments (after `--`): <token file> <wrk thread count>.
-- done() prints one line starting with "refresh-pool" for the harness to read.

local thread_count = 0
local threads = {}

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- Per-thread counters are globals so that done() can read them with
-- thread:get(); wrk copies only globals between Lua states.
tokens = {}
pool_size = 0
position = 0
exhausted = 0
succeeded = 0
failed = 0
statuses = {}

function init(args)
   local path, stride = args[1], tonumber(args[2])
   local line_number = 0
   for token in io.lines(path) do
      if line_number % stride == thread_index then
         table.insert(tokens, token)
      end
      line_number = line_number + 1
   end
   pool_size = #tokens
end

local headers = { ["Content-Type"] = "application/json" }

function request()
   position = position + 1
   local token = tokens[position]
   if token == nil then
      -- The pool ran dry: send a token the service refuses, so that the
      -- shortfall shows up as non-2xx answers instead of hiding.
      exhausted = exhausted + 1
      token = "bench-pool-exhausted"
   end
   return wrk.format("POST", nil, headers, '{"refreshToken":"' .. token .. '"}')
end

function response(status, response_headers, body)
   if status >= 200 and status < 300 then
      succeeded = succeeded + 1
   else
      failed = failed + 1
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
   end
end

function done(summary, latency, requests)
   local totals = { pool = 0, sent = 0, succeeded = 0, failed = 0, exhausted = 0 }
   local by_status = {}
   for _, thread in ipairs(threads) do
      totals.pool = totals.pool + thread:get("pool_size")
      totals.sent = totals.sent + thread:get("position")
      totals.succeeded = totals.succeeded + thread:get("succeeded")
      totals.failed = totals.failed + thread:get("failed")
      totals.exhausted = totals.exhausted + thread:get("exhausted")
      for status, count in pairs(thread:get("statuses")) do
         by_status[status] = (by_status[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(by_status) do
      table.insert(parts, status .. ":" .. count)
   end
   io.write(string.format(
      "refresh-pool pool=%d sent=%d succeeded=%d failed=%d exhausted=%d statuses=%s\n",
      totals.pool, totals.sent, totals.succeeded, totals.failed, totals.exhausted,
      table.concat(parts, ",")))
end
