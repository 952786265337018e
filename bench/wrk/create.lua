-- POST /orders with a valid order (no Idempotency-Key, as the old clients
-- sent). Args: ID_FILE (unused) [RATE THREADS].
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")

setup = common.number_threads
common.setup_thread_state(function(_args) end)

request = function()
  return wrk.format("POST", "/orders", common.json_headers, common.order_body())
end

done = common.done
