-- wrk script: POST /updates with the Android plugin's body from 1000 devices that keep checking
-- in (the common case: an app checks at every start). bench/load/updates.lua is the worst
-- case beside it: a new device per request.
local counter = 0
function request()
  counter = counter + 1
  local device = string.format("0a1b2c3d-1111-4222-8333-%012d", counter % 1000)
  local body = '{"platform":"android","device_id":"' .. device .. '","app_id":"com.bench.app",' ..
    '"custom_id":"","version_build":"1.0.0","version_code":"100","version_os":"14",' ..
    '"version_name":"builtin","plugin_version":"8.51.23","is_emulator":false,"is_prod":true,' ..
    '"install_source":"google_play","defaultChannel":""}'
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json; charset=utf-8" }, body)
end
