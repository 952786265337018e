-- Shared by the wrk scripts: the id list, request bodies, optional pacing
-- and the one-line JSON result the harness parses.
--
-- Script arguments (after `--`): ID_FILE [RATE THREADS]. With RATE, every
-- thread spaces its requests on a fixed schedule of RATE/THREADS per second
-- (an open-loop approximation: a request that falls behind is sent at once,
-- as wrk2 does, so a slow server is not allowed to slow the load down).
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]

local M = {}
local clock = ffi.new("bench_timespec")

function M.now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

function M.load_ids(path)
  local ids = {}
  local file = assert(io.open(path, "r"), "cannot open the id list " .. tostring(path))
  for line in file:lines() do
    if #line == 24 then ids[#ids + 1] = line end
  end
  file:close()
  assert(#ids > 0, "the id list " .. path .. " is empty")
  return ids
end

local products = { "Spring sale banner 728x90", "Newsletter header", "Instagram story set", "YouTube thumbnail" }
local names = { "Ada Lovelace", "Grace Hopper", "Alan Turing", "Radia Perlman" }
local addresses = { "12 Main St, Springfield 01234", "5 Rue de la Paix, Lyon 69002", "7 Calle Mayor, Madrid 28013" }

function M.order_body()
  return string.format('{"product":"%s","quantity":%d,"customer_name":"%s","customer_address":"%s"}',
    products[math.random(#products)], math.random(1, 500), names[math.random(#names)], addresses[math.random(#addresses)])
end

M.json_headers = { ["Content-Type"] = "application/json" }
-- The API key of the system under test, on every request: in wrk.headers for
-- the requests wrk makes itself, and in json_headers too, because
-- wrk.format() given a header table sends that table instead of wrk.headers.
local api_key = os.getenv("ORDERS_API_KEY")
if api_key and api_key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. api_key
  M.json_headers["Authorization"] = "Bearer " .. api_key
end

-- Installs init() and, with a rate, delay() in the calling script's globals.
function M.setup_thread_state(on_init)
  local interval_ms, next_at
  init = function(args)
    math.randomseed((thread_index or 0) * 7919 + math.floor(M.now_ms()))
    local rate, threads = tonumber(args[2]), tonumber(args[3])
    if rate and rate > 0 then
      interval_ms = (threads or 1) * 1000 / rate
      delay = function()
        local now = M.now_ms()
        next_at = (next_at or now) + interval_ms
        local wait = next_at - now
        if wait < 0 then return 0 end
        return math.floor(wait)
      end
    end
    on_init(args)
  end
end

local thread_count = 0
function M.number_threads(thread)
  thread_count = thread_count + 1
  thread:set("thread_index", thread_count)
end

function M.done(summary, latency, _requests)
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end

return M
