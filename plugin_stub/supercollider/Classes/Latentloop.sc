/*
Latentloop: an sclang client for the latentloop render daemon (OSC protocol v1, docs/protocol.md).

	~ll = Latentloop.new;                                    // 127.0.0.1:7878
	~ll.render("dusty boom bap drums", 92, 4, action: { |done| done[\buffer].postln });

Replies come from the daemon's listening socket, so every responder here is an OSCdef matched
by the daemon's NetAddr (host and port): a reply from any other sender is ignored. The OSCdefs
are keyed by the daemon's host and port, so evaluating Latentloop.new again for the same daemon
replaces the responders instead of adding a second set.
*/

Latentloop {
	classvar <>defaultHost = "127.0.0.1", <>defaultPort = 7878;

	var <addr, <>server, <>token, <>verbose = true;
	var <jobs, <lastDone, <defKeys, waiting, nextId = 1, tag;
	var <>onQueued, <>onProgress, <>onDone, <>onFail, <>onReply, <>onBar, <>onPlaying;

	*new { |host, port, server|
		^super.new.init(host ? defaultHost, port ? defaultPort, server)
	}

	// The sample name a /done file gets in SuperDirt (see dirtNames): "ll_" and the prompt part
	// of the daemon's file name (the text before the first "_"), "-" turned into "_".
	// ".../dusty-boom-bap_92bpm_4bars_seed1234.wav" -> 'll_dusty_boom_bap'
	*dirtName { |path|
		var stem = PathName(path.asString).fileNameWithoutExtension;
		^("ll_" ++ stem.split($_).first.replace("-", "_")).asSymbol
	}

	init { |host, port, argServer|
		addr = NetAddr(host, port);
		server = argServer ? Server.default;
		jobs = IdentityDictionary.new;
		waiting = IdentityDictionary.new;
		defKeys = List.new;
		tag = "latentloop_%_%".format(addr.ip, port);
		this.prListen;
	}

	port { ^addr.port }

	nextRequestId {
		var id = nextId;
		nextId = nextId + 1;
		^id
	}

	// ------------------------------------------------------------------------------ requests

	// /latentloop/render in the canonical form: <id> prompt <p> [bpm <b>] [bars <n>] [seed <s>]
	// [options...] [token <t>]. options: pairs ([\steps, 8, \variations, 2]) or an Event.
	// latency: nil sends a message; a number sends a bundle timetagged that many seconds from
	// now (like s.bind), which the daemon runs at that time. Returns the request id.
	render { |prompt, bpm, bars, seed, action, options, latency, failAction|
		var id = this.nextRequestId;
		jobs[id] = (prompt: prompt.asString, action: action, failAction: failAction, files: List.new);
		this.prSend(this.renderMessage(id, prompt, bpm, bars, seed, options), latency);
		^id
	}

	renderMessage { |id, prompt, bpm, bars, seed, options|
		var msg = ['/latentloop/render', id, \prompt, prompt.asString];
		bpm !? { msg = msg ++ [\bpm, bpm] };
		bars !? { msg = msg ++ [\bars, bars] };
		seed !? { msg = msg ++ [\seed, seed.asString] }; // a string carries any 64-bit seed
		options !? {
			msg = msg ++ (if(options.isKindOf(Dictionary)) { options.getPairs } { options })
		};
		token !? { msg = msg ++ [\token, token.asString] };
		^msg
	}

	cancel { |id = -1| addr.sendMsg('/latentloop/cancel', id) }

	ping { |action| ^this.prRequest(action, '/latentloop/ping') }

	// jobId: one of our jobs; its state and first path are appended to status.reply
	status { |action, jobId|
		if(jobId.isNil) { ^this.prRequest(action, '/latentloop/status') };
		^this.prRequest(action, '/latentloop/status', jobId)
	}

	// scsynth-style subscription: replies to every sender's jobs (Tidal's, a DAW's) come here too
	subscribe { |port| addr.sendMsg('/latentloop/notify', 1, port ? NetAddr.langPort) }

	unsubscribe { |port| addr.sendMsg('/latentloop/notify', 0, port ? NetAddr.langPort) }

	// authorise this computer with the daemon's shared token ([osc] token) for auth_ttl_s
	// (an hour); answered auth.reply <id> <seconds>. Or set .token: it is sent with each render.
	auth { |argToken, action| ^this.prRequest(action, '/latentloop/auth', argToken.asString) }

	// the daemon's clip launcher (docs/playback.md). what: a job id of ours, or a path
	play { |what, slot = 0, quantize = \bar, variation = 0, action|
		^this.prRequest(action, '/latentloop/play', what, slot, quantize.asString, variation)
	}

	stop { |slot = -1, quantize = \bar, action|
		^this.prRequest(action, '/latentloop/stop', slot, quantize.asString)
	}

	gain { |slot, db, action| ^this.prRequest(action, '/latentloop/gain', slot, db) }

	tempo { |bpm, beatsPerBar = 4, action|
		^this.prRequest(action, '/latentloop/tempo', bpm, beatsPerBar)
	}

	transport { |on = true, action|
		^this.prRequest(action, '/latentloop/transport', on.binaryValue)
	}

	// SuperDirt: subscribe, and append every /done file (anyone's: a Tidal pattern's too) with
	// dirt.loadSoundFile(path, name, true) to two sample banks: \ll (every loop, in arrival
	// order) and Latentloop.dirtName(path) (the loops of that prompt). Appending never frees a
	// buffer that is playing; SuperDirt wraps the index, so n "-1" is the newest loop.
	dirtLoader { |dirt, names|
		names = names ? { |done| [\ll, Latentloop.dirtName(done[\path])] };
		this.subscribe;
		onDone = { |done|
			names.value(done).do { |name|
				dirt.loadSoundFile(done[\path], name, true);
			};
			if(verbose) { "latentloop: % as %".format(done[\path].basename, names.value(done)).postln };
		};
	}

	free {
		defKeys.do { |key| OSCdef(key).free };
		defKeys.clear;
	}

	// ------------------------------------------------------------------------------ replies

	prSend { |msg, latency|
		if(latency.notNil) { addr.sendBundle(latency, msg) } { addr.sendMsg(*msg) }
	}

	prRequest { |action, address ... args|
		var id = this.nextRequestId;
		action !? { waiting[id] = action };
		addr.sendMsg(address, id, *args);
		^id
	}

	prDef { |leaf, func|
		var key = (tag ++ "_" ++ leaf).asSymbol;
		defKeys.add(key);
		OSCdef(key, func, ("/latentloop/" ++ leaf).asSymbol, addr);
	}

	prListen {
		this.prDef("queued", { |msg|
			onQueued.value(msg[1], msg[2], this);
		});
		this.prDef("progress", { |msg|
			onProgress.value(msg[1], msg[2], msg[3], msg[4], this);
		});
		this.prDef("done", { |msg| this.prDone(msg) });
		this.prDef("fail", { |msg| this.prFail(msg) });
		this.prDef("bar", { |msg, time|
			// sent ahead, in a bundle timetagged at the audible downbeat: time is that moment
			onBar.value(msg[2], msg[3], msg[4], time, this);
		});
		this.prDef("playing", { |msg|
			onPlaying.value(msg[2], msg[3], msg[4].asString, this);
		});
		#[pong, 'status.reply', 'auth.reply', 'notify.reply', 'play.reply', 'stop.reply',
			'gain.reply', 'tempo.reply', 'transport.reply', 'link.reply', 'audio.reply'].do { |leaf|
			this.prDef(leaf.asString, { |msg|
				var reply = (ok: true, reply: leaf, id: msg[1], args: msg[2..]);
				waiting.removeAt(msg[1]).value(reply, this);
				onReply.value(reply, this);
			});
		};
	}

	prDone { |msg|
		var id = msg[1], job = jobs[id], done, sf;
		done = (
			id: id, path: msg[2].asString, seconds: msg[3], bpm: msg[4], bars: msg[5],
			seed: msg[6].asString, variation: msg[7], measuredBpm: msg[8], deviation: msg[9],
			prompt: job !? { job[\prompt] }
		);
		// the file is complete when /done is sent: its header is read in the language
		sf = SoundFile.openRead(done[\path]);
		if(sf.notNil) {
			done[\frames] = sf.numFrames;
			done[\sampleRate] = sf.sampleRate;
			done[\channels] = sf.numChannels;
			sf.close;
		};
		lastDone = done;
		job !? { job[\files].add(done) };
		if(server.notNil and: { server.serverRunning }) {
			done[\buffer] = Buffer.read(server, done[\path], action: { this.prDelivered(job, done) });
		} {
			this.prDelivered(job, done);
		};
	}

	prDelivered { |job, done|
		if(verbose) {
			"latentloop: done % % (% frames)".format(done[\id], done[\path].basename, done[\frames]).postln
		};
		job !? { job[\action].value(done, this) };
		onDone.value(done, this);
	}

	prFail { |msg|
		var id = msg[1], job = jobs[id], fail, action;
		fail = (ok: false, id: id, command: msg[2], code: msg[3], message: msg[4].asString);
		action = (job !? { job[\failAction] }) ?? { waiting.removeAt(id) };
		if(verbose) { "latentloop: fail % % % %".format(id, fail[\command], fail[\code], fail[\message]).warn };
		action.value(fail, this);
		onFail.value(fail, this);
	}
}
