"""byeline on LiveKit: the control API byeline serves, and the scale-out mode on a deployment.

* :mod:`.control_api` serves LiveKit's own Twirp API (``livekit.RoomService`` and
  ``livekit.SIP``) on ``byeline serve --http``, so tools written for LiveKit drive byeline: each
  active call is a room holding one SIP participant.
* :mod:`.call_handle` is the ``Call`` the routing agent sees when it runs on LiveKit, with the
  safe handback order (attributes on the SIP participant first, then the end of the SIP leg).
* :mod:`.worker` runs the routing agent as a LiveKit Agents worker; :mod:`.apply` creates or
  updates the trunk and the dispatch rule on a deployment; :mod:`.command` is ``byeline livekit``.
"""
