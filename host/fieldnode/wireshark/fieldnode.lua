-- fieldnode frames in Wireshark: names what is inside a CoAP payload of Content-Format 17
-- (application/cose; cose-type="cose-mac0"), the frames fieldnode nodes send to their gateway and
-- the commands riding back on its answers. docs/frame-format.md is the layout.
--
-- Wireshark 4.0 shows the CoAP layer but does not hand Content-Format 17 to its COSE dissector,
-- so this post-dissector does: it calls Wireshark's own "cose" dissector on the payload, then adds
-- the fieldnode tree (frame kind, key id split into device and key generation, counter, the
-- SenML records with names, values and units).
--
-- It cannot verify a MAC: Wireshark holds no keys. Every frame says so; to verify a capture,
-- run `fieldnode decode <capture.pcap>` with the site's keystore.
--
-- Installed by `fieldnode wireshark --install` (into ~/.local/lib/wireshark/plugins/), or loaded
-- once with `tshark -X lua_script:fieldnode.lua` / `wireshark -X lua_script:fieldnode.lua`.
-- The gateway's UDP port (default 5683) is a preference: -o fieldnode.port:5684.

set_plugin_info({
    version = "1.0.0",
    description = "fieldnode frames (COSE_Mac0 + SenML-CBOR) in CoAP; MACs are not verified here",
    author = "fieldnode",
    repository = "fieldnode host package (fieldnode wireshark)",
})

local fieldnode = Proto("fieldnode", "fieldnode frame")

local KINDS = { [0] = "telemetry", [1] = "event", [2] = "boot", [3] = "command", [4] = "ack", [5] = "declaration" }
local ALGS = { [4] = "HMAC 256/64", [5] = "HMAC 256/256" }
local UNVERIFIED = "MAC not verified: Wireshark holds no keys; run `fieldnode decode <capture>` to verify"

local pf = {
    kind = ProtoField.uint8("fieldnode.kind", "Frame kind", base.DEC, KINDS),
    declaration = ProtoField.bytes("fieldnode.declaration", "Declaration id (frame format v2 telemetry)"),
    alg = ProtoField.uint8("fieldnode.alg", "Algorithm", base.DEC, ALGS),
    kid = ProtoField.bytes("fieldnode.kid", "Key id"),
    device = ProtoField.ether("fieldnode.device", "Device (factory MAC)"),
    key_generation = ProtoField.uint16("fieldnode.key_generation", "Key generation"),
    counter = ProtoField.uint64("fieldnode.counter", "Frame counter"),
    mac = ProtoField.bytes("fieldnode.mac", "MAC tag"),
    verification = ProtoField.string("fieldnode.verification", "Verification"),
    records = ProtoField.uint16("fieldnode.records", "SenML records"),
    record = ProtoField.string("fieldnode.record", "Record"),
    bn = ProtoField.string("fieldnode.bn", "Base name"),
    bt = ProtoField.double("fieldnode.bt", "Base time (s since 1970)"),
    name = ProtoField.string("fieldnode.record.name", "Name"),
    value = ProtoField.double("fieldnode.record.value", "Value"),
    string = ProtoField.string("fieldnode.record.string", "String value"),
    bool = ProtoField.string("fieldnode.record.bool", "Boolean value"),
    unit = ProtoField.string("fieldnode.record.unit", "Unit"),
    err = ProtoField.string("fieldnode.record.error", "Error"),
    time = ProtoField.double("fieldnode.record.time", "Time offset (s)"),
}
fieldnode.fields = pf

local ef_unverified = ProtoExpert.new("fieldnode.unverified", UNVERIFIED, expert.group.SECURITY, expert.severity.NOTE)
local ef_malformed = ProtoExpert.new("fieldnode.malformed", "Not a fieldnode frame", expert.group.MALFORMED,
    expert.severity.WARN)
fieldnode.experts = { ef_unverified, ef_malformed }

fieldnode.prefs.port = Pref.uint("Gateway UDP port", 5683, "CoAP is decoded on this UDP port")

local coap = Dissector.get("coap")
local cose = Dissector.get("cose")
local f_payload = Field.new("coap.payload")
local f_ctype = Field.new("coap.opt.ctype")
local udp_ports = DissectorTable.get("udp.port")
local added_port

local function use_port()
    if added_port ~= fieldnode.prefs.port then
        if added_port and added_port ~= 5683 then udp_ports:remove(added_port, coap) end
        udp_ports:add(fieldnode.prefs.port, coap)
        added_port = fieldnode.prefs.port
    end
end
fieldnode.prefs_changed = use_port

-- A small CBOR reader (RFC 8949) over a Tvb with absolute offsets, so every field shows its bytes.
local MAX_DEPTH = 8

local function half_float(h)
    local e, m = bit32.band(bit32.rshift(h, 10), 31), bit32.band(h, 1023)
    local v
    if e == 0 then v = m * 2 ^ -24
    elseif e == 31 then v = (m == 0) and math.huge or 0 / 0
    else v = (m + 1024) * 2 ^ (e - 25) end
    if bit32.band(h, 0x8000) ~= 0 then v = -v end
    return v
end

local function head(tvb, off)
    local ib = tvb(off, 1):uint()
    local major, ai = bit32.rshift(ib, 5), bit32.band(ib, 31)
    if ai < 24 then return major, ai, ai, 1 end
    if ai == 24 then return major, ai, tvb(off + 1, 1):uint(), 2 end
    if ai == 25 then return major, ai, tvb(off + 1, 2):uint(), 3 end
    if ai == 26 then return major, ai, tvb(off + 1, 4):uint(), 5 end
    if ai == 27 then return major, ai, tvb(off + 1, 8):uint64():tonumber(), 9 end
    error("indefinite length (fieldnode frames use definite lengths only)")
end

local item

local function container(tvb, it, count, per_entry, depth)
    local p = it.off + it.len
    local entries = {}
    for i = 1, count do
        local entry = {}
        for j = 1, per_entry do
            entry[j] = item(tvb, p, depth + 1)
            p = p + entry[j].len
        end
        entries[i] = entry
    end
    it.len = p - it.off
    return entries
end

item = function(tvb, off, depth)
    if depth > MAX_DEPTH then error("CBOR nested too deep") end
    local major, ai, val, hl = head(tvb, off)
    local it = { major = major, off = off, len = hl }
    if major == 0 then it.value = val
    elseif major == 1 then it.value = -1 - val
    elseif major == 2 or major == 3 then
        it.content_off, it.content_len, it.len = off + hl, val, hl + val
        if major == 3 then it.value = val > 0 and tvb(off + hl, val):string(ENC_UTF_8) or "" end
    elseif major == 4 then
        it.items = {}
        for i, entry in ipairs(container(tvb, it, val, 1, depth)) do it.items[i] = entry[1] end
    elseif major == 5 then
        it.map = {}
        for _, entry in ipairs(container(tvb, it, val, 2, depth)) do
            if entry[1].value ~= nil then it.map[entry[1].value] = entry[2] end
        end
    elseif major == 6 then
        it.tag, it.inner = val, item(tvb, off + hl, depth + 1)
        it.len = hl + it.inner.len
    elseif ai == 20 or ai == 21 then it.value = (ai == 21)
    elseif ai == 25 then it.value = half_float(val)
    elseif ai == 26 then it.value = tvb(off + 1, 4):float()
    elseif ai == 27 then it.value = tvb(off + 1, 8):float() end
    return it
end

local function range(tvb, it) return tvb(it.off, it.len) end
local function content(tvb, it) return tvb(it.content_off, it.content_len) end

local function number_text(v)
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return string.format("%.7g", v)  -- the node sends float32: about 7 significant digits
end

local function add_record(tree, tvb, rec)
    local m = rec.map
    local name = m[0] and m[0].value or "?"
    local value, vtree_field, vitem
    if m[2] then value, vtree_field, vitem = number_text(m[2].value), pf.value, m[2]
    elseif m[3] then value, vtree_field, vitem = string.format("%q", m[3].value), pf.string, m[3]
    elseif m[4] then value, vtree_field, vitem = tostring(m[4].value), pf.bool, m[4]
    elseif m["err"] then value, vtree_field, vitem = "ERROR " .. m["err"].value, pf.err, m["err"] end
    local text = name .. " = " .. (value or "?") .. (m[1] and (" " .. m[1].value) or "")
    local rt = tree:add(pf.record, range(tvb, rec), text)
    if m[-2] then rt:add(pf.bn, range(tvb, m[-2]), m[-2].value) end
    if m[-3] then rt:add(pf.bt, range(tvb, m[-3]), m[-3].value) end
    rt:add(pf.name, range(tvb, m[0] or rec), name)
    if vitem then
        local v = vitem.value
        if vtree_field == pf.bool then v = tostring(v) end
        rt:add(vtree_field, range(tvb, vitem), v)
    end
    if m[1] then rt:add(pf.unit, range(tvb, m[1]), m[1].value) end
    if m[6] then rt:add(pf.time, range(tvb, m[6]), m[6].value) end
    return text
end

local function add_header(t, tvb, hdr, info)
    local m = hdr.map
    if m[1] then t:add(pf.alg, range(tvb, m[1]), m[1].value) end
    local kid = m[4]
    if kid and kid.major == 2 and kid.content_len == 8 then
        local r = content(tvb, kid)
        local kt = t:add(pf.kid, r)
        kt:add(pf.device, r(0, 6))
        kt:add(pf.key_generation, r(6, 2))
        info.device = r(0, 6):bytes():tohex():lower()
    end
    local piv = m[6]
    if piv and piv.major == 2 and piv.content_len >= 1 and piv.content_len <= 8 then
        local r = content(tvb, piv)
        t:add(pf.counter, r, r:uint64())
        info.counter = tostring(r:uint64())
    end
    local kind = m[-65537]
    if kind and kind.major == 0 then
        t:add(pf.kind, range(tvb, kind), kind.value)
        info.kind = KINDS[kind.value] or tostring(kind.value)
    end
    -- frame format v2: a declaration id in place of the kind means telemetry in short names
    local did = m[-65538]
    if did and did.major == 2 then
        t:add(pf.declaration, content(tvb, did))
        info.kind = "telemetry v2"
    end
end

local function dissect_frame(tvb, pinfo, tree)
    local t = tree:add(fieldnode, tvb())
    local root = item(tvb, 0, 0)
    local arr = root.major == 6 and root.tag == 17 and root.inner.items
    if not arr or #arr ~= 4 or arr[1].major ~= 2 or arr[3].major ~= 2 or arr[4].major ~= 2 then
        t:add_proto_expert_info(ef_malformed, "Not a COSE_Mac0 (tag 17 around [bstr, map, bstr, bstr])")
        return
    end
    local info = {}
    add_header(t, tvb, item(tvb, arr[1].content_off, 1), info)
    local mac = content(tvb, arr[4])
    t:add(pf.mac, mac)
    t:add(pf.verification, mac, UNVERIFIED)
    t:add_proto_expert_info(ef_unverified)
    local pack = item(tvb, arr[3].content_off, 1)
    local readings = {}
    if pack.items then
        local rt = t:add(pf.records, content(tvb, arr[3]), #pack.items)
        for i, rec in ipairs(pack.items) do
            if rec.map then readings[i] = add_record(rt, tvb, rec) end
        end
    end
    local summary = string.format("%s %s #%s", info.kind or "?", info.device or "?", info.counter or "?")
    t:append_text(": " .. summary .. " (MAC not verified)")
    pinfo.cols.info:append(" | fieldnode " .. summary .. " " .. table.concat(readings, ", "))
end

function fieldnode.dissector(tvb, pinfo, tree)
    local payloads = { f_payload() }
    if #payloads == 0 then return end
    local cose_mac0 = false
    for _, ctype in ipairs({ f_ctype() }) do
        local text = tostring(ctype.value)
        if text:find("Type 17$") or text:find("cose%-mac0") then cose_mac0 = true end
    end
    if not cose_mac0 then return end
    local payload = payloads[#payloads].range:tvb()
    if cose then pcall(function() cose:call(payload, pinfo, tree) end) end
    local ok, err = pcall(dissect_frame, payload, pinfo, tree)
    if not ok then
        tree:add(fieldnode, payload()):add_proto_expert_info(ef_malformed, "Malformed fieldnode frame: " .. tostring(err))
    end
end

register_postdissector(fieldnode)
use_port()
