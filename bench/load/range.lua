-- wrk script: 64 KiB Range GETs at random offsets of a blob of `size` bytes.
-- Usage: wrk ... -s range.lua URL -- <size>
local size = 16 * 1024 * 1024
local span = 64 * 1024
function init(args)
  if args[1] then size = tonumber(args[1]) end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  local first = math.random(0, size - span)
  return wrk.format("GET", nil, { Range = "bytes=" .. first .. "-" .. (first + span - 1) })
end
