import asyncio

from tests.media import AudioRecorder, ToneTrack, wait_for_tone


async def test_two_participants_hear_each_other(server, clients):
    a, b = clients(server, "alice"), clients(server, "bob")
    await a.join("room")
    await b.join("room")
    await a.publish(microphone=ToneTrack(440))
    await b.publish(microphone=ToneTrack(660))
    ta = await a.wait_for_track(b.peer_id)
    tb = await b.wait_for_track(a.peer_id)
    ra, rb = AudioRecorder(ta.track), AudioRecorder(tb.track)
    await wait_for_tone(ra, 660)
    await wait_for_tone(rb, 440)
    await asyncio.gather(ra.stop(), rb.stop())
