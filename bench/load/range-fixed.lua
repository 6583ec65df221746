-- wrk script: the same 64 KiB Range GET every time (bytes 1 MiB .. 1 MiB + 64 KiB - 1).
-- Beside range.lua's random offsets: nginx answers random 64 KiB ranges at ~830 req/s on
-- loopback (delayed ACKs stall it), so that row's ratio says more about nginx than about
-- us; this one compares the two servers on equal terms.
local first = 1024 * 1024
local span = 64 * 1024
local range = "bytes=" .. first .. "-" .. (first + span - 1)
function request()
  return wrk.format("GET", nil, { Range = range })
end
