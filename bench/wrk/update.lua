-- PUT /orders/{id} of a random seeded order with all four writable fields
-- (so the old service, which nulls the fields it is not sent, stores the
-- same data as the others). Args: ID_FILE [RATE THREADS].
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
local ids

setup = common.number_threads
common.setup_thread_state(function(args) ids = common.load_ids(args[1]) end)

request = function()
  return wrk.format("PUT", "/orders/" .. ids[math.random(#ids)], common.json_headers, common.order_body())
end

done = common.done
