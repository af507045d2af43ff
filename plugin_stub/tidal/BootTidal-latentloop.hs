-- latentloop for TidalCycles (Tidal 1.9): patterns that request loops from `latentloop serve`.
--
-- In your BootTidal.hs, replace the line `tidal <- startTidal (superdirtTarget {...}) (defaultConfig {...})`
-- with the block below: one stream, one clock, two targets. An event goes to SuperDirt only when it
-- has an `s`, and to latentloop only when it has `llprompt` and `llbpm` (ArgList sends nothing when a
-- value without a default is missing), so `d1 $ s "bd"` renders nothing and `d8 $ llprompt ...`
-- plays nothing.
--
-- What goes out: a bundle timetagged at the event's time (Pre BundleStamp; the daemon runs it
-- then) holding /latentloop/render <bpm f> <bars f> <prompt s>, the daemon's positional form.

:{
let latentloopTarget =
      Target { oName = "latentloop", oAddress = "127.0.0.1", oPort = 7878, oBusPort = Nothing,
               oLatency = 0.2, oWindow = Nothing, oSchedule = Pre BundleStamp, oHandshake = False }
    latentloopShape =
      OSC "/latentloop/render" $ ArgList [("llbpm", Nothing), ("llbars", Just $ VF 4), ("llprompt", Nothing)]
    llbpm = pF "llbpm"
    llbars = pF "llbars"
    llprompt = pS "llprompt"
    -- Tidal counts cycles per second; one cycle is one bar of `beatsPerCycle` beats here
    beatsPerCycle = 4 :: Double
    cpsToBpm c = c * 60 * beatsPerCycle
    bpmToCps b = b / 60 / beatsPerCycle
:}

tidal <- startStream (defaultConfig {cFrameTimespan = 1/20})
           [(superdirtTarget {oLatency = 0.05, oAddress = "127.0.0.1", oPort = 57120}, [superdirtShape]),
            (latentloopTarget, [latentloopShape])]

-- Example (evaluate line by line; the SuperDirt side is superdirt-latentloop.scd):
--
-- setcps (bpmToCps 120)                                     -- 120 BPM = 0.5 cps
-- -- a new 8-bar loop every 8 cycles, the prompts taking turns, at the session tempo
-- d8 $ slow 8 $ llprompt (cat [pure "dusty boom bap drums", pure "dub chords"]) # llbpm (pure $ cpsToBpm 0.5) # llbars 8
-- -- play the newest loop, stretched over 8 cycles (its own length at this tempo)
-- d1 $ loopAt 8 $ s "ll" # n "-1"
-- -- or the loops of one prompt by name (the sample-name rule: "ll_" + the prompt's words joined by "_")
-- d2 $ loopAt 8 $ s "ll_dub_chords" # n "-1"
