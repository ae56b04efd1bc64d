-- wrk script: every response must be 200 with a body byte-identical to a reference file.
--   wrk ... -s wrk_check.lua URL -- /path/to/expected/body
-- Prints "CHECK good=N bad=M first_bad=..." at the end (summed over wrk's threads).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  expected = f:read("*a")
  f:close()
  good = 0
  bad = 0
  first_bad = ""
end

function response(status, headers, body)
  if status == 200 and body == expected then
    good = good + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = string.format("status=%d len=%d", status, body and #body or -1)
    end
  end
end

function done(summary, latency, requests)
  local g, b, first = 0, 0, ""
  for _, t in ipairs(threads) do
    g = g + t:get("good")
    b = b + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  io.write(string.format("CHECK good=%d bad=%d first_bad=%s\n", g, b, first))
end
