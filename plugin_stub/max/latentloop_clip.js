// latentloop_clip.js: put a finished latentloop file into a Live 12 clip slot (Max for Live).
//
// Use it in a Max for Live *audio effect* on an audio track, in a [js latentloop_clip.js] box:
//
//   [route /latentloop/done] -> [unpack i s f f f s i] -> (outlet 1, the path) -> [prepend load]
//   -> [js latentloop_clip.js] -> [print latentloop-clip]
//
// "load <path>" creates an audio clip of <path> in the first empty clip slot of the device's
// own track, through the Live Object Model: ClipSlot.create_audio_clip(path), Live 12.0.5 or
// newer. Live reads the file's ACID tempo chunk and warps the clip to the set's tempo.
// "fire 1" / "fire 0" turns launching each new clip on or off (on by default): a fired clip
// starts on Live's global launch quantization, so a new loop comes in on the next bar.
// "slot <n> <path>" puts the clip into slot <n> instead (an existing clip there is replaced).
//
// Written for Max's classic [js] (ES5). Not run in Live here: a test runs it under Node with a
// stand-in LiveAPI (tests/integration/test_kit_files.py), which checks the calls, not Live.

autowatch = 1;
inlets = 1;
outlets = 1;

var fireNew = 1;

function fire(on) {
    fireNew = on ? 1 : 0;
}

function trackPath() {
    return "this_device canonical_parent";
}

function firstEmptySlot() {
    var track = new LiveAPI(trackPath());
    var count = track.getcount("clip_slots");
    for (var i = 0; i < count; i++) {
        var slot = new LiveAPI(trackPath() + " clip_slots " + i);
        if (Number(slot.get("has_clip")) === 0) {
            return i;
        }
    }
    return -1;
}

function putClip(index, path) {
    var slot = new LiveAPI(trackPath() + " clip_slots " + index);
    if (Number(slot.get("has_clip")) !== 0) {
        slot.call("delete_clip");
    }
    slot.call("create_audio_clip", path);
    if (fireNew) {
        slot.call("fire");
    }
    outlet(0, "clip", index, path);
}

function load(path) {
    var index = firstEmptySlot();
    if (index < 0) {
        outlet(0, "error", "no empty clip slot on this track");
        return;
    }
    putClip(index, String(path));
}

function slot(index, path) {
    putClip(Number(index), String(path));
}
