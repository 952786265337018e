-- GET /orders/{id}, walking the seeded ids in order, each thread on its own
-- stride, so no id is read twice within one pass over the list. With the
-- product's cache TTL at 1 s and a pass longer than that, every read misses
-- the cache. Args: ID_FILE 0 THREADS (0: no pacing).
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
local ids, position, stride

setup = common.number_threads
common.setup_thread_state(function(args)
  ids = common.load_ids(args[1])
  stride = tonumber(args[3]) or 1
  position = (thread_index or 1) - 1
end)

request = function()
  position = (position + stride) % #ids
  return wrk.format("GET", "/orders/" .. ids[position + 1])
end

done = common.done
