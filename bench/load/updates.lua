-- wrk script: POST /updates with the Android plugin's body, a different device id per request
-- over UPDATES_DEVICES devices (default 1000000: within a run, every request is a new device,
-- the worst case; UPDATES_DEVICES=1000: devices that keep checking in, the common case).
local counter = 0
local devices = tonumber(os.getenv("UPDATES_DEVICES") or "") or 1000000
function request()
  counter = counter + 1
  local device = string.format("0a1b2c3d-1111-4222-8333-%012d", counter % devices)
  local body = '{"platform":"android","device_id":"' .. device .. '","app_id":"com.bench.app",' ..
    '"custom_id":"","version_build":"1.0.0","version_code":"100","version_os":"14",' ..
    '"version_name":"builtin","plugin_version":"8.51.23","is_emulator":false,"is_prod":true,' ..
    '"install_source":"google_play","defaultChannel":""}'
  -- nil path: the URL given to wrk (our /updates, or nginx's tiny location for the baseline)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json; charset=utf-8" }, body)
end
