class Echo:
    def __init__(self):
        print("Echo module is initialized")

    def echo_request(self, request):
        # Returning the request itself answers with its body.
        return request
