-- GET /orders/{id}, ids drawn at random from the seeded list (cache warm
-- once each id has been read). Args: ID_FILE [RATE THREADS].
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
local ids

setup = common.number_threads
common.setup_thread_state(function(args) ids = common.load_ids(args[1]) end)

request = function()
  return wrk.format("GET", "/orders/" .. ids[math.random(#ids)])
end

done = common.done
