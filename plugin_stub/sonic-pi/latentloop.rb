# latentloop for Sonic Pi: ask a running `latentloop serve` for a loop, play it in time.
#
# Paste this into a buffer and press Run. Before that:
#   - start the daemon: latentloop serve            (it listens on 127.0.0.1:7878)
#   - Sonic Pi: Preferences -> IO -> "Allow incoming OSC" on (it listens on port 4560)
#
# Sonic Pi sends OSC from another port than the one it listens on, so the daemon cannot answer
# the sender. The notify line below subscribes port 4560: the daemon then sends every job's
# queued / progress / done / fail there, where they become cues named "/osc:127.0.0.1:7878/...".
# Send it again after restarting the daemon (subscriptions live in its memory).
#
# Not run in Sonic Pi: tests/integration/test_kit_files.py reads the osc lines of this file,
# encodes them as Sonic Pi does (Integer -> i, Float -> f, String -> s) and checks the daemon's
# parser reads them as the intended requests.

ll_bpm = 92
ll_bars = 4
ll_beats_per_bar = 4

use_bpm ll_bpm
use_osc "127.0.0.1", 7878

# Only when the daemon has a token ([osc] token): send it first, before notify (a subscription
# sent before the token fails "unauthorized"). Without a token the line is harmless.
# osc "/latentloop/auth", 1, "my-token"

osc "/latentloop/notify", 1, 4560
osc "/latentloop/render", 1, "prompt", "dusty boom bap drums", "bpm", ll_bpm, "bars", ll_bars, "beats_per_bar", ll_beats_per_bar

# More requests, one at a time (uncomment, Run):
# osc "/latentloop/render", 2, "prompt", "dub chords", "bpm", ll_bpm, "bars", ll_bars, "seed", "1234"
# osc "/latentloop/cancel", -1

# Wait for each finished file. Sonic Pi caches samples by path, so free the old one first;
# the next pass of :latentloop_play picks the new file up on its next loop boundary.
live_loop :latentloop_load do
  use_real_time
  id, path, seconds, bpm, bars = sync "/osc*/latentloop/done"
  sample_free path
  load_sample path
  set :latentloop_path, path
  set :latentloop_beats, (bars * ll_beats_per_bar).round
end

# Play the newest loop, stretched to exactly its beats at the current bpm, one bar at a time
# until the first one arrives, so it starts on a bar.
live_loop :latentloop_play do
  path = get[:latentloop_path]
  if path
    beats = get[:latentloop_beats]
    sample path, beat_stretch: beats
    sleep beats
  else
    sleep ll_beats_per_bar
  end
end

# Watch the progress in the log.
live_loop :latentloop_progress do
  use_real_time
  id, step, total, fraction = sync "/osc*/latentloop/progress"
  puts "latentloop #{id}: step #{step}/#{total}"
end

live_loop :latentloop_fail do
  use_real_time
  id, command, code, message = sync "/osc*/latentloop/fail"
  puts "latentloop #{id} #{command} failed: #{code} #{message}"
end
