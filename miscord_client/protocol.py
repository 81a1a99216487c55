"""The signaling contract (signaling-v1, revision 1.1) in code: every message
both ways as a TypedDict, the error and close codes, and the limits. The
server builds and parses with these; clients send and read them.
"""

# no ``from __future__ import annotations``: on Python 3.11 TypedDict would
# then not see ``NotRequired`` at run time
import re
from enum import IntEnum
from typing import Any, Literal, NotRequired, TypedDict

# --- error codes (``error.code``) ----------------------------------------------------

BAD_JSON = "bad_json"
BAD_MESSAGE = "bad_message"
UNKNOWN_TYPE = "unknown_type"
NOT_JOINED = "not_joined"
ALREADY_JOINED = "already_joined"
FORBIDDEN = "forbidden"
BAD_SDP = "bad_sdp"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
CHANNEL_FULL = "channel_full"
#: (1.1) the server's media port range is used up
NO_PORTS = "no_ports"
INTERNAL = "internal"
ERROR_CODES = (
    BAD_JSON,
    BAD_MESSAGE,
    UNKNOWN_TYPE,
    NOT_JOINED,
    ALREADY_JOINED,
    FORBIDDEN,
    BAD_SDP,
    RATE_LIMITED,
    TOO_LARGE,
    CHANNEL_FULL,
    NO_PORTS,
    INTERNAL,
)


class Close(IntEnum):
    """WebSocket close codes of the contract."""

    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_BIG = 1009
    REPLACED = 4001
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    TIMEOUT = 4408
    RATE_LIMITED = 4429
    #: (1.1) the worker (or node) holding this channel's media died: join again
    MEDIA_LOST = 1011
    #: (1.1) the server is draining: try another node or later
    TRY_AGAIN_LATER = 1013
    #: (1.1) unknown, used or expired resume token: join afresh
    RESUME_REFUSED = 4410
    #: (1.1) kicked by an admin
    KICKED = 4003


# --- values and limits ---------------------------------------------------------------

KINDS = ("voice", "events")
SOURCES = ("microphone", "screen")
PCS = ("publish", "subscribe")
#: (1.1) ``resume.media``: the client's peer connections survived, or are new
MEDIA_MODES = ("keep", "restart")
#: why a participant left (``participant_left.reason``)
LEAVE_REASONS = ("left", "replaced", "timeout", "kicked", "error")
CHANNEL_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
MAX_SDP = 200_000
MAX_CANDIDATE = 1_000

Kind = Literal["voice", "events"]
Source = Literal["microphone", "screen"]
Pc = Literal["publish", "subscribe"]
MediaMode = Literal["keep", "restart"]
Ref = str | int | None

# --- shared shapes -------------------------------------------------------------------


class TrackState(TypedDict):
    source: str
    muted: bool


class ParticipantInfo(TypedDict):
    peer_id: str
    user_id: str
    name: str
    tracks: list[TrackState]


class IceCandidate(TypedDict):
    candidate: str
    sdpMid: str | None
    sdpMLineIndex: int | None


class IceServer(TypedDict, total=False):
    urls: list[str]
    username: str
    credential: str


class TrackInfo(TypedDict):
    """Which participant and source one subscribe m-line carries."""

    peer_id: str
    source: str


class SpeakerLevel(TypedDict):
    peer_id: str
    level: float


# --- client -> server ----------------------------------------------------------------


class JoinMessage(TypedDict):
    type: Literal["join"]
    token: str
    channel: str
    kind: Kind
    id: NotRequired[Ref]


class OfferMessage(TypedDict):
    type: Literal["offer"]
    pc: Literal["publish"]
    sdp: str
    sources: dict[str, Source]
    id: NotRequired[Ref]


class AnswerMessage(TypedDict):
    type: Literal["answer"]
    pc: Literal["subscribe"]
    sdp: str
    id: NotRequired[Ref]


class CandidateMessage(TypedDict):
    type: Literal["candidate"]
    pc: Pc
    candidate: IceCandidate | None
    id: NotRequired[Ref]


class MuteMessage(TypedDict):
    type: Literal["mute"]
    source: Source
    muted: bool
    id: NotRequired[Ref]


class LeaveMessage(TypedDict):
    type: Literal["leave"]
    id: NotRequired[Ref]


class ResumeMessage(TypedDict):
    """(1.1) The first message of a new socket instead of ``join``."""

    type: Literal["resume"]
    resume_token: str
    media: NotRequired[MediaMode]
    id: NotRequired[Ref]


class PingMessage(TypedDict):
    type: Literal["ping"]
    id: NotRequired[Ref]


class StatsMessage(TypedDict):
    """The ``stats`` extension (docs/protocol.md)."""

    type: Literal["stats"]
    report: dict[str, Any]
    id: NotRequired[Ref]


ClientMessage = (
    JoinMessage
    | OfferMessage
    | AnswerMessage
    | CandidateMessage
    | MuteMessage
    | LeaveMessage
    | PingMessage
    | StatsMessage
    | ResumeMessage
)

# --- server -> client ----------------------------------------------------------------


class Joined(TypedDict):
    type: Literal["joined"]
    ref: Ref
    peer_id: str | None
    channel: str
    participants: list[ParticipantInfo]
    ice_servers: list[IceServer]
    #: (1.1) voice only: what ``resume`` takes, once
    resume_token: NotRequired[str]


class Resumed(TypedDict):
    """(1.1) ``joined`` again, after a ``resume``, with a new token."""

    type: Literal["resumed"]
    ref: Ref
    peer_id: str
    channel: str
    participants: list[ParticipantInfo]
    ice_servers: list[IceServer]
    resume_token: str


class Draining(TypedDict):
    """(1.1) The server is shutting down; it closes what is left in
    ``deadline_s`` seconds."""

    type: Literal["draining"]
    deadline_s: float


class Answer(TypedDict):
    type: Literal["answer"]
    ref: Ref
    pc: Literal["publish"]
    sdp: str


class Offer(TypedDict):
    type: Literal["offer"]
    pc: Literal["subscribe"]
    sdp: str
    tracks: dict[str, TrackInfo]


class ParticipantJoined(TypedDict):
    type: Literal["participant_joined"]
    participant: ParticipantInfo


class ParticipantLeft(TypedDict):
    type: Literal["participant_left"]
    peer_id: str
    reason: str


class TrackPublished(TypedDict):
    type: Literal["track_published"]
    peer_id: str
    source: str


class TrackUnpublished(TypedDict):
    type: Literal["track_unpublished"]
    peer_id: str
    source: str


class TrackMuted(TypedDict):
    type: Literal["track_muted"]
    peer_id: str
    source: str
    muted: bool
    #: (1.1) "server" when an admin muted or unmuted it
    by: NotRequired[Literal["server"]]


class Speaking(TypedDict):
    type: Literal["speaking"]
    speakers: list[SpeakerLevel]


class Pong(TypedDict):
    type: Literal["pong"]
    ref: Ref


class Error(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    ref: Ref


ServerMessage = (
    Joined
    | Resumed
    | Draining
    | Answer
    | Offer
    | ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | TrackMuted
    | Speaking
    | Pong
    | Error
)
