-- wrk script for bench/flood.sh: POSTs GitHub's push example as fast as wrk can, none of
-- it correctly signed, in four kinds taken in turn (each request with a delivery id of
-- its own, so nothing is refused as a repeat before its signature is checked):
--   1. no X-Hub-Signature-256 header at all
--   2. a well-formed signature made with another secret (FUT_WRONG_SIG)
--   3. garbage in the header (not hex, wrong prefix, truncated, empty-ish)
--   4. every header GitHub sends (hook id, installation target, sha1 signature, user agent)
--      around a well-formed but wrong sha256 signature
-- Every one must be refused 401 (or 429 past the client's unverified budget); the counts
-- of each status wrk read are printed at the end as `FLOOD_STATUS <status> <count>`.
local body_file = os.getenv("FUT_BODY")
local wrong_sig = os.getenv("FUT_WRONG_SIG")
local run_id = os.getenv("FUT_RUN") or tostring(os.time())

local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()

local garbage = {
  "sha256=zz" .. string.rep("0", 62),
  "sha1=0123456789abcdef0123456789abcdef01234567",
  "sha256=",
  "not a signature",
  string.rep("A", 200),
  "sha256=" .. string.sub(wrong_sig, 8, 40),
}

wrk.method = "POST"
wrk.body = body

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  counts = {}
end

local counter = 0
function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Delivery"] = "flood-" .. run_id .. "-" .. tid .. "-" .. counter,
  }
  local kind = counter % 4
  if kind == 1 then
    headers["X-Hub-Signature-256"] = wrong_sig
  elseif kind == 2 then
    headers["X-Hub-Signature-256"] = garbage[math.floor(counter / 4) % #garbage + 1]
  elseif kind == 3 then
    headers["User-Agent"] = "GitHub-Hookshot/a1b2c3d"
    headers["X-GitHub-Hook-ID"] = tostring(100000 + counter % 7)
    headers["X-GitHub-Hook-Installation-Target-ID"] = "186853002"
    headers["X-GitHub-Hook-Installation-Target-Type"] = "repository"
    headers["X-Hub-Signature"] = "sha1=0123456789abcdef0123456789abcdef01234567"
    headers["X-Hub-Signature-256"] = wrong_sig
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    -- A table is copied out of the thread's Lua state as name/value pairs.
    local c = thread:get("counts")
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("FLOOD_STATUS %d %d\n", status, n))
  end
end
