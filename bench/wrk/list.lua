-- GET /orders?limit=100, from the start or after one of the first hundred
-- page boundaries of the seeded ids (so there are 100 distinct pages).
-- Args: ID_FILE [RATE THREADS].
package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local common = require("common")
local paths = {}

setup = common.number_threads
common.setup_thread_state(function(args)
  local ids = common.load_ids(args[1])
  table.sort(ids)
  paths[1] = "/orders?limit=100"
  for page = 1, 99 do
    local boundary = ids[page * 100]
    if boundary then paths[#paths + 1] = "/orders?limit=100&after=" .. boundary end
  end
end)

request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end

done = common.done
