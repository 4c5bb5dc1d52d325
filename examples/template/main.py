# The original pyrs project template, in Python 3.
class Api:
    def __init__(self):
        print("Api module is initialized")  # The server creates an instance of class for each module

    def echo_request(self, request):  # Called when a user requests http://url:port/echo
        print("'echo' module called")
        return request

    def hello_request(self, request):  # call when user gets http://url:port/hello
        print("'hello' module called")
        return "world"

    def default_request(self, request):  # otherwise
        print("'default' module called")
        return ""
